//! The PostgreSQL server `scripts/test` starts (or `ATREST_POSTGRES_URL`
//! names): statements run as its administrator, to make and drop a database
//! per test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use tokio_postgres::NoTls;

/// The variable naming the server.
pub const URL_VAR: &str = "ATREST_POSTGRES_URL";

/// The administrator's connection URL.
///
/// # Panics
/// If [`URL_VAR`] is not set: the test cannot run without a server.
#[must_use]
pub fn admin_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: run scripts/test, which starts a private PostgreSQL server, \
             or set {URL_VAR} to a server where this user may create databases"
        )
    })
}

/// The URL of database `name` on the same server as `url`.
///
/// # Panics
/// If `url` does not end in `/DATABASE`.
#[must_use]
pub fn database_url(url: &str, name: &str) -> String {
    let (server, _) = url.rsplit_once('/').expect("a URL ending in /DATABASE");
    format!("{server}/{name}")
}

/// Runs `sql` (one or more statements) on `url`.
///
/// # Panics
/// If the server cannot be reached or refuses a statement.
pub fn run_sql(url: &str, sql: &str) {
    with_client(url, async |client| {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    });
}

/// The first column of the first row `sql` returns on `url`, as text (for
/// `SHOW` and other one-value queries).
///
/// # Panics
/// If the server cannot be reached, refuses the query or returns no row.
#[must_use]
pub fn query_text(url: &str, sql: &str) -> String {
    with_client(url, async |client| {
        let messages = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        messages
            .iter()
            .find_map(|message| match message {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{sql}: no row"))
    })
}

/// Runs `work` with a connection to `url`, on a runtime of its own.
fn with_client<T>(url: &str, work: impl AsyncFnOnce(&tokio_postgres::Client) -> T) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"));
        let connection = tokio::spawn(connection);
        let out = work(&client).await;
        drop(client);
        let _ = connection.await;
        out
    })
}
