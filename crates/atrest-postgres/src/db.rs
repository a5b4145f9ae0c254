//! The connection pool, transactions with retries, the classification of
//! PostgreSQL errors, and versioned migrations.

use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::ErrorKind;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls, Transaction};

/// A boxed future borrowing a transaction.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a [`Postgres`] connects and how long it waits.
///
/// Start from [`PgOptions::default`] and change what you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgOptions {
    /// How long opening one connection may take (unless the connection
    /// string sets `connect_timeout`). Default 10 s.
    pub connect_timeout: Duration,
    /// The server-side `statement_timeout` of every connection: a statement
    /// (a lock wait included) running longer is cancelled and reported as
    /// [`ErrorKind::Unavailable`]. Default 30 s.
    pub statement_timeout: Duration,
    /// How long an operation waits for a free pooled connection. Default
    /// 30 s.
    pub wait_timeout: Duration,
    /// The most connections the pool holds. Default 8.
    pub max_connections: usize,
    /// How many times a transaction that lost a race (a serialization
    /// failure or a deadlock) is run again before the conflict is
    /// reported. Default 10.
    pub retries: u32,
    /// The PEM file of the CA(s) that issued the server's certificate, for
    /// TLS (`sslmode=verify-full`) when the connection string names no
    /// `sslrootcert`; the system's roots otherwise. Default none.
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(30),
            max_connections: 8,
            retries: 10,
            ca_file: None,
        }
    }
}

/// What went wrong talking to PostgreSQL, classified.
///
/// It never holds a password or a statement's parameters: only the
/// server's message (which may name a table, a constraint or a key value
/// such as a tenant id) or the client library's.
#[derive(Debug)]
pub struct PgError {
    kind: ErrorKind,
    what: &'static str,
    code: Option<SqlState>,
    newer_schema: bool,
    /// A key violation the transaction's own reads led to (see
    /// [`PgError::lost_race`]): retried like a serialization failure.
    lost_race: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl core::fmt::Display for PgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PostgreSQL: ")?;
        f.write_str(self.what)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

impl PgError {
    /// What kind of failure this is: [`ErrorKind::Unavailable`] for a
    /// server that cannot be reached, a timeout or a server shutting down;
    /// [`ErrorKind::Conflict`] for a lost race (after the retries) or a
    /// unique-key violation; [`ErrorKind::Usage`] for a bad connection
    /// string, a refused login, missing privileges, a missing database or
    /// a schema newer than this build; [`ErrorKind::Integrity`] for values
    /// that are not what the schema says, and for objects the schema does
    /// not create; [`ErrorKind::Io`] otherwise.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The SQLSTATE code the server reported, if it reported one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_ref().map(SqlState::code)
    }

    /// Whether the database's schema is newer than this build knows (a
    /// newer version of the program migrated it): this build refuses it.
    pub fn is_newer_schema(&self) -> bool {
        self.newer_schema
    }

    /// Whether this is a lost race: a serialization failure or a deadlock.
    pub(crate) fn is_race(&self) -> bool {
        self.lost_race
            || self.code == Some(SqlState::T_R_SERIALIZATION_FAILURE)
            || self.code == Some(SqlState::T_R_DEADLOCK_DETECTED)
    }

    /// `error`, where a unique violation of `constraint` means a concurrent
    /// transaction took the key this one computed from what it read (the
    /// next version of a file): a lost race, retried. PostgreSQL reports
    /// such a race as a serialization failure only when both transactions
    /// went through the violated index.
    pub(crate) fn lost_race(error: tokio_postgres::Error, constraint: &str) -> Self {
        let violated = error.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::UNIQUE_VIOLATION && db.constraint() == Some(constraint)
        });
        Self {
            lost_race: violated,
            ..Self::from(error)
        }
    }

    /// Whether a unique or foreign key was violated (a concurrent change).
    pub(crate) fn is_key_violation(&self) -> bool {
        self.code == Some(SqlState::UNIQUE_VIOLATION)
            || self.code == Some(SqlState::FOREIGN_KEY_VIOLATION)
    }

    pub(crate) fn what(&self) -> &'static str {
        self.what
    }

    pub(crate) fn new(kind: ErrorKind, what: &'static str) -> Self {
        Self {
            kind,
            what,
            code: None,
            newer_schema: false,
            lost_race: false,
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            source: Some(source.into()),
            ..Self::new(kind, what)
        }
    }

    /// A value this schema cannot store (a length beyond `i64::MAX`).
    pub(crate) fn out_of_range(what: &'static str) -> Self {
        Self::new(ErrorKind::Usage, what)
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(error: tokio_postgres::Error) -> Self {
        let code = error.code().cloned();
        let (kind, what) = classify(&error);
        Self {
            kind,
            what,
            code,
            newer_schema: false,
            lost_race: false,
            source: Some(Box::new(error)),
        }
    }
}

/// How a client or server error is classified.
fn classify(error: &tokio_postgres::Error) -> (ErrorKind, &'static str) {
    if let Some(db) = error.as_db_error() {
        let code = db.code();
        if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
        {
            return (
                ErrorKind::Conflict,
                "concurrent transactions kept conflicting",
            );
        }
        if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION {
            return (ErrorKind::Conflict, "a concurrent change won");
        }
        if *code == SqlState::QUERY_CANCELED {
            return (ErrorKind::Unavailable, "the statement timed out");
        }
        let class = code.code().get(..2).unwrap_or("");
        return match class {
            // connection exception, insufficient resources, operator
            // intervention (shutdown, cannot connect now), lock not
            // available
            "08" | "53" | "57" | "55" => (ErrorKind::Unavailable, "the server is unavailable"),
            // invalid authorization, invalid catalog name (no such
            // database), syntax error or access rule violation, feature
            // not supported
            "28" | "3D" | "42" | "0A" => (ErrorKind::Usage, "the server refused the request"),
            // data exception, integrity constraint, internal error
            "22" | "23" | "XX" => (ErrorKind::Integrity, "the server reported invalid data"),
            _ => (ErrorKind::Io, "the server failed"),
        };
    }
    let source = std::error::Error::source(error);
    if source.is_some_and(|s| {
        s.is::<tokio_postgres::types::WrongType>() || s.is::<tokio_postgres::types::WasNull>()
    }) {
        return (
            ErrorKind::Integrity,
            "a stored value is not of the schema's type",
        );
    }
    // A server whose certificate or host name does not verify is not the
    // database: refused, not unavailable.
    if atrest_core::tls::refusal(error).is_some() {
        return (
            ErrorKind::Refused,
            "the server's TLS certificate or host name was refused",
        );
    }
    // Everything else the client reports is about the connection: refused,
    // closed, timed out, or a broken protocol exchange.
    (ErrorKind::Unavailable, "the connection failed")
}

/// The outcome of a transaction body: a database failure, or the store's
/// own refusal (a conflict it detected, a missing row) that rolls the
/// transaction back.
pub(crate) enum Failure<E> {
    /// The database failed.
    Db(PgError),
    /// The body stopped with the store's error; nothing was changed.
    Stop(E),
}

impl<E> From<tokio_postgres::Error> for Failure<E> {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error.into())
    }
}

impl<E> From<PgError> for Failure<E> {
    fn from(error: PgError) -> Self {
        Self::Db(error)
    }
}

/// How a transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Reads only, from one snapshot.
    Read,
    /// Reads and writes, serializable: the result is that of some order of
    /// the concurrent transactions, or one of them fails and is retried.
    Write,
}

/// A connection pool to one PostgreSQL database.
///
/// It runs on the caller's tokio runtime: each operation's future does its
/// I/O in the task that awaits it, and the connections it opens run as
/// tasks spawned on that runtime, which must have I/O and time enabled.
/// Use one `Postgres` from one runtime: its connections are tasks of the
/// runtime that opened them, and end with it. Dropping it never blocks and
/// needs no runtime: the connections close once no operation uses them.
///
/// Cheap to clone: clones share the pool. [`crate::PgMetadataStore`] and
/// [`crate::PgCatalog`] may share one.
#[derive(Clone)]
pub struct Postgres {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    retries: u32,
    /// Host, port and database name, for `Debug` (never the password).
    target: String,
}

impl core::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Postgres")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// A pool for the database at `url`, a libpq-style connection string
    /// (`postgresql://user@host:port/dbname?connect_timeout=5` or
    /// `host=… port=… user=… dbname=…`), with `options`.
    ///
    /// No connection is opened yet, and no runtime is needed to make the
    /// pool: connections are opened lazily, on the runtime of the first
    /// operations that need them (opening a store runs its migrations, so
    /// it reports an unreachable server).
    ///
    /// Connections to any host but a loopback address or a Unix socket go
    /// over TLS through rustls, the server's certificate and host name
    /// verified (libpq's `sslmode=verify-full`, the default there); the CA
    /// is the system's, or the PEM file `sslrootcert=FILE` or
    /// [`PgOptions::ca_file`] names. `sslmode=disable` is for loopback and
    /// Unix sockets only (their default); `prefer`, `allow`, `require` and
    /// `verify-ca` are refused (a fallback to plaintext, or a certificate
    /// for another host). A certificate or host name that does not verify
    /// fails the connection with [`ErrorKind::Refused`].
    ///
    /// # Errors
    /// [`ErrorKind::Usage`] for a connection string that does not parse,
    /// asks for a TLS mode refused above or plaintext to another host, or
    /// names a CA file that cannot be read.
    pub fn connect(url: &str, options: &PgOptions) -> Result<Self, PgError> {
        let (url, request) = crate::tls::take_tls_parameters(url)?;
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PgError::with_source(ErrorKind::Usage, "invalid connection string", e))?;
        Self::with_tls(config, &request, options)
    }

    /// As [`Postgres::connect`], from a parsed configuration (its
    /// `sslmode`, by the same rules; the CA from
    /// [`PgOptions::ca_file`]).
    ///
    /// # Errors
    /// As for [`Postgres::connect`].
    pub fn with_config(
        config: tokio_postgres::Config,
        options: &PgOptions,
    ) -> Result<Self, PgError> {
        let request = crate::tls::TlsRequest {
            mode: None,
            root_cert: None,
        };
        Self::with_tls(config, &request, options)
    }

    fn with_tls(
        mut config: tokio_postgres::Config,
        request: &crate::tls::TlsRequest,
        options: &PgOptions,
    ) -> Result<Self, PgError> {
        let tls = crate::tls::decide(&mut config, request, options.ca_file.as_deref())?;
        if config.get_connect_timeout().is_none() {
            let _ = config.connect_timeout(options.connect_timeout);
        }
        if config.get_application_name().is_none() {
            let _ = config.application_name("atrest");
        }
        let mut server_options = config.get_options().unwrap_or_default().to_owned();
        for (setting, value) in [
            ("statement_timeout", options.statement_timeout),
            // A transaction left open (a client that stopped mid-way)
            // holds locks for no longer than this.
            (
                "idle_in_transaction_session_timeout",
                options.statement_timeout * 2,
            ),
        ] {
            if !server_options.is_empty() {
                server_options.push(' ');
            }
            server_options.push_str(&format!("-c {setting}={}", value.as_millis().max(1)));
        }
        let _ = config.options(server_options);
        let _ = config.keepalives(true);
        let target = describe(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls {
            crate::tls::Decision::Plain => Manager::from_config(config, NoTls, manager_config),
            crate::tls::Decision::Tls(tls) => Manager::from_config(config, tls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| PgError::with_source(ErrorKind::Usage, "cannot build the pool", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                retries: options.retries,
                target,
            }),
        })
    }

    /// Runs `body` in one transaction, and runs it again (in a new
    /// transaction, after a short random pause) when it lost a race to a
    /// concurrent transaction, up to the configured number of retries.
    pub(crate) async fn transaction<T, E, F>(&self, mode: Mode, body: F) -> Result<T, Failure<E>>
    where
        F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, Failure<E>>>,
    {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            match once(&mut client, mode, &body).await {
                Err(Failure::Db(error)) if error.is_race() && attempt < self.inner.retries => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// A pooled connection, opened on the current runtime if none is free.
    async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        // The pool's timeouts and its connections' tasks need a tokio
        // runtime: without one, say so rather than let tokio panic.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(PgError::new(
                ErrorKind::Usage,
                "called outside a tokio runtime; the PostgreSQL stores run on the caller's",
            ));
        }
        self.inner.pool.get().await.map_err(pool_error)
    }
}

async fn once<T, E, F>(
    client: &mut deadpool_postgres::Object,
    mode: Mode,
    body: &F,
) -> Result<T, Failure<E>>
where
    F: for<'t> Fn(&'t Transaction<'t>) -> BoxFuture<'t, Result<T, Failure<E>>>,
{
    let client: &mut tokio_postgres::Client = client;
    let tx = match mode {
        Mode::Read => client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true),
        Mode::Write => client
            .build_transaction()
            .isolation_level(IsolationLevel::Serializable),
    }
    .start()
    .await?;
    // On an error the transaction is dropped, which rolls it back.
    let value = body(&tx).await?;
    tx.commit().await?;
    Ok(value)
}

/// A random pause before retry `attempt`: a few milliseconds, doubling.
fn backoff(attempt: u32) -> Duration {
    let ceiling = 5u64 << attempt.min(6);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_millis(1 + random % ceiling)
}

fn pool_error(error: deadpool_postgres::PoolError) -> PgError {
    match error {
        deadpool_postgres::PoolError::Backend(error) => error.into(),
        deadpool_postgres::PoolError::Timeout(_) => PgError::with_source(
            ErrorKind::Unavailable,
            "no connection within the timeout",
            error,
        ),
        other => PgError::with_source(ErrorKind::Unavailable, "no connection", other),
    }
}

/// `host:port/dbname`, for `Debug`.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or_default();
    format!("{host}:{port}/{dbname}")
}

/// One component's schema: its numbered migrations, and the tables they
/// create (which must carry no trigger or rule).
pub(crate) struct Schema {
    /// The component's name in the migrations table.
    pub(crate) component: &'static str,
    /// Migration `i + 1` is `migrations[i]`.
    pub(crate) migrations: &'static [&'static str],
    /// Every table the migrations create.
    pub(crate) tables: &'static [&'static str],
}

/// The advisory lock every migration takes ("atrest" in ASCII).
const MIGRATION_LOCK: i64 = 0x6174_7265_7374;

impl Postgres {
    /// Brings `schema` to its latest version: under an advisory lock (so
    /// that processes starting at once do not race), in one transaction,
    /// applies the migrations the database does not have yet and records
    /// them. Refuses a database migrated further than this build knows, and
    /// one whose tables carry triggers or rules.
    pub(crate) async fn migrate(&self, schema: &'static Schema) -> Result<(), PgError> {
        let mut client = self.client().await?;
        // Read committed: each statement after the lock sees what the
        // process that held it before committed.
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await?;
        let _ = tx
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS atrest_schema_migrations (
                component  text        NOT NULL,
                version    integer     NOT NULL CHECK (version > 0),
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (component, version)
            )",
        )
        .await?;
        let current: i32 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM atrest_schema_migrations
                 WHERE component = $1",
                &[&schema.component],
            )
            .await?
            .try_get(0)?;
        let known = i32::try_from(schema.migrations.len()).unwrap_or(i32::MAX);
        if current > known {
            return Err(PgError {
                newer_schema: true,
                ..PgError::with_source(
                    ErrorKind::Usage,
                    "the database schema is newer than this build knows; upgrade the program",
                    format!(
                        "{} schema version {current} (this build knows up to {known})",
                        schema.component
                    ),
                )
            });
        }
        for (version, sql) in (1..).zip(schema.migrations.iter()) {
            if version <= current {
                continue;
            }
            tx.batch_execute(sql).await?;
            let _ = tx
                .execute(
                    "INSERT INTO atrest_schema_migrations (component, version) VALUES ($1, $2)",
                    &[&schema.component, &version],
                )
                .await?;
        }
        check_objects(&tx, schema.tables).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Refuses tables that carry a trigger or a rule: something the schema does
/// not create, such as a trigger planted to copy rows before a purge
/// deletes them.
pub(crate) async fn check_objects(
    tx: &Transaction<'_>,
    tables: &'static [&'static str],
) -> Result<(), PgError> {
    let tables: Vec<&str> = tables.to_vec();
    let found: i64 = tx
        .query_one(
            "SELECT (SELECT count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                     WHERE NOT t.tgisinternal AND c.relname = ANY ($1)
                     AND c.relnamespace = current_schema()::regnamespace)
                  + (SELECT count(*) FROM pg_rules
                     WHERE schemaname = current_schema() AND tablename = ANY ($1))",
            &[&tables],
        )
        .await?
        .try_get(0)?;
    if found > 0 {
        return Err(PgError::new(
            ErrorKind::Integrity,
            "a table holds a trigger or rule the schema does not create",
        ));
    }
    Ok(())
}
