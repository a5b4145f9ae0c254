//! The command line: clap types only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Encrypt tenant files at rest: per-file keys under tenant key
/// hierarchies, chunked AES-256-GCM, storage-opaque blobs, an audit trail.
#[derive(Parser)]
#[command(name = "atrest", version, after_help = crate::exit::EXIT_CODES)]
pub(crate) struct Cli {
    /// The deployment directory.
    #[arg(
        long,
        global = true,
        env = "ATREST_DATA",
        default_value = "atrest-data"
    )]
    pub(crate) data: PathBuf,
    /// Print one JSON document on stdout instead of text (a report, or
    /// {"error", "kind", "exit"}); on stderr when stdout carries a file's
    /// bytes (`get` without -o).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create a deployment: master key file, key store, audit log, blob store.
    Init {
        /// Store blobs at this object_store URL (s3://, az://, gs://,
        /// file://) instead of DATA/blobs.
        #[arg(long)]
        blobs: Option<String>,
        /// Publish the audit log's signed checkpoints to this directory
        /// (default: DATA/audit-witness). Put it on other storage than DATA:
        /// it is what shows that records were cut from the log's end.
        #[arg(long, value_name = "DIR")]
        audit_witness: Option<PathBuf>,
        /// Keep key metadata and the catalog in this PostgreSQL database
        /// (postgresql://user@host:port/db, without a password) instead of
        /// SQLite files in DATA.
        #[arg(long, value_name = "URL", conflicts_with = "metadata_url_env")]
        metadata: Option<String>,
        /// As --metadata, with the URL (which may hold a password) read
        /// from this environment variable each time; only the variable's
        /// name is stored.
        #[arg(long, value_name = "VAR")]
        metadata_url_env: Option<String>,
        /// Keep a copy of every blob at this location too: an
        /// object_store URL (s3://, az://, gs://, file://) or a local
        /// directory. Repeat for several replicas. Reads fall back to a
        /// replica when a copy is missing, unreachable or damaged.
        #[arg(long = "replica", value_name = "URL|DIR")]
        replicas: Vec<String>,
        /// How many locations (the primary and the replicas) must make a
        /// blob durable for an upload to succeed (default: all); the others
        /// are left for `atrest blobs scrub --repair`.
        #[arg(long, value_name = "N", requires = "replicas")]
        copies: Option<usize>,
    },
    /// Configure key services (OpenBao or Vault transit) holding root keys.
    #[command(subcommand)]
    Kms(KmsCommand),
    /// Create and inspect tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Seal a file (or stdin, `-`) as a new version of a tenant's file.
    Put {
        /// The tenant.
        tenant: String,
        /// The file to read, or `-` for stdin.
        file: PathBuf,
        /// The file's name in the tenant (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Who is uploading, as user@tenant (default: cli@TENANT).
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// Open a tenant's file (or a byte range of it).
    Get {
        /// The tenant.
        tenant: String,
        /// The file's name.
        name: String,
        /// Write here instead of stdout (`-`). A regular file is written
        /// to a new file beside it (mode 0600 while written; the mode of
        /// the file it replaces once complete) and renamed over it only
        /// once every byte verified; the next get into the same file, and
        /// `atrest gc`, remove such a partial output left by a get that
        /// was killed. A FIFO or device is written directly.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Only some bytes: START..END (END exclusive), START.. (to the
        /// end), ..END (the first END bytes) or -N (the last N bytes); K, M,
        /// G mean KiB, MiB, GiB: `--range 10M..20M`. As with HTTP byte
        /// ranges, an END past the end of the file stops there, and a range
        /// that selects no byte is refused.
        #[arg(long, allow_hyphen_values = true)]
        range: Option<String>,
        /// The version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// Who is reading, as user@tenant (default: cli@TENANT).
        #[arg(long = "as")]
        principal: Option<String>,
    },
    /// List files: the newest version of each (of one tenant, or all),
    /// or every version of one file, or with --versions of all.
    Ls {
        /// The tenant.
        tenant: Option<String>,
        /// Only this file: every version of it.
        #[arg(requires = "tenant")]
        name: Option<String>,
        /// Only files whose names begin with this (`reports/2026/`).
        #[arg(long, conflicts_with = "name")]
        prefix: Option<String>,
        /// Every version, not only the newest of each file.
        #[arg(long)]
        versions: bool,
    },
    /// Delete a file's version (or every version of it), then erase its
    /// key for good: a crypto-erasure no database backup undoes.
    Rm {
        /// The tenant.
        tenant: String,
        /// The file's name.
        name: String,
        /// Only this version (default: every version of the file).
        #[arg(long)]
        version: Option<u64>,
        /// Who is deleting, as user@tenant (default: cli@TENANT).
        #[arg(long = "as")]
        principal: Option<String>,
        /// Delete only; leave the erasure to a later `atrest erase` (one
        /// erasure for many deletions: it re-wraps every key of the
        /// tenant).
        #[arg(long)]
        later: bool,
    },
    /// Make a tenant's deletions final: roll its TIK, re-wrap every file
    /// key under the new version, and retire (destroy) the older versions
    /// with their keys.
    Erase {
        /// The tenant.
        tenant: String,
    },
    /// Rotate keys: a tenant's TIK (re-wrapping its file keys), or a
    /// service root key.
    #[command(subcommand)]
    Rotate(RotateCommand),
    /// Record that the customer revoked one of a tenant's customer keys.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The key, as provider:label.
        key: String,
    },
    /// Destroy all key material of a tenant: its files become unreadable,
    /// by anyone, for good.
    Purge {
        /// The tenant.
        tenant: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Remove what interrupted uploads left: uploads whose process died
    /// (records never written) with their blobs, staging files of
    /// unfinished uploads, and blobs no file record names. An upload that a
    /// running process may still be writing is left alone and reported:
    /// every process that opens the deployment holds a lease on it
    /// (DATA/leases), and a staging file is locked by its writer. Also
    /// removes the partial outputs of `get -o` runs that were killed
    /// (noted in DATA/outputs), unless a get still writes them.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// With PostgreSQL metadata, shared by processes on other machines
        /// that this one cannot see: an upload is abandoned only once begun
        /// longer ago than this (choose more than the longest upload):
        /// `24h`, `90min`. Not needed with SQLite metadata.
        #[arg(long, default_value = "24h")]
        older_than: humantime::Duration,
    },
    /// Check and repair the copies of blobs.
    #[command(subcommand)]
    Blobs(BlobsCommand),
    /// A meeting participant's client of `atrest-serve`: content shared in
    /// a meeting, decrypted on this machine.
    #[command(subcommand)]
    Meeting(MeetingCommand),
    /// Verify or show the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a completion script for a shell (bash, zsh, fish, elvish,
    /// powershell), from the command line's own definition:
    /// `atrest completions bash > /etc/bash_completion.d/atrest`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), from the command line's own
    /// definition: `atrest man | man -l -`.
    Man,
    /// Run the whole model on the embedded defaults in a fresh directory
    /// and print a short report.
    Demo {
        /// The directory, new or empty, kept afterwards (default: a new one
        /// under the temporary directory, removed once the demo succeeded).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Keep the demo's own directory (its path is printed).
        #[arg(long, conflicts_with = "dir")]
        keep: bool,
        /// Size of the demo file, in MiB.
        #[arg(long, default_value_t = 64)]
        size_mib: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum MeetingCommand {
    /// Fetch an item of a meeting and decrypt it here: the service
    /// delivers the item's key to you (a participant; the delivery is
    /// audited), then its ciphertext, and every segment is authenticated on
    /// this machine before a byte is written. Exits 4 if you are not (or no
    /// longer) a participant, 3 if the meeting or item is gone, 5 if the
    /// ciphertext does not authenticate.
    Fetch {
        /// The service: https://HOST[:PORT] (http:// to a loopback address
        /// only).
        #[arg(long, value_name = "URL", env = "ATREST_SERVICE")]
        service: String,
        /// A file holding your bearer token (mode 600).
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "token_env",
            conflicts_with = "token_env"
        )]
        token_file: Option<PathBuf>,
        /// The environment variable holding your bearer token.
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
        /// A PEM file of the CA that issued the service's certificate (a
        /// private CA), trusted besides the system's.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// The meeting's tenant.
        tenant: String,
        /// The meeting's id.
        meeting: String,
        /// The item's name in the meeting.
        item: String,
        /// Write here instead of stdout (`-`): a new file beside it, renamed
        /// over it once every byte verified.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum BlobsCommand {
    /// Check every copy of every file's blob, at the primary and each
    /// replica, against the length in its record and its SHA-256 digest
    /// when the record has one (seals record digests when the deployment
    /// has replicas; the report counts the records without), and list the
    /// copies that are missing, of the wrong length, of the wrong digest
    /// or unreachable. No key is needed to check. Exits 5 if a copy is left
    /// bad (6 if only unreachable locations are).
    Scrub {
        /// Repair: authenticate each damaged record's tag, then a good
        /// copy whole (its file key released to the operation, audited),
        /// write it over each bad one (complete and durable before it
        /// replaces anything) and authenticate what was written; report
        /// what was done. A record or copy that does not authenticate
        /// writes nothing.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum KmsCommand {
    /// Add a key service; tenants then name its keys as NAME:KEY@VERSION
    /// (an OpenBao or Vault transit engine), or NAME:KEY-ARN (AWS KMS,
    /// with --aws).
    Add {
        /// The provider name its keys are known by (for example `bao`).
        name: String,
        /// The key service is AWS KMS: keys are named by their ARN, in any
        /// region; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
        /// (and AWS_SESSION_TOKEN), or --credentials-file.
        #[arg(long, conflicts_with_all = ["address", "mount", "token_env", "token_file"])]
        aws: bool,
        /// The server (https://…, or http:// on loopback).
        #[arg(long, required_unless_present = "aws")]
        address: Option<String>,
        /// Where the transit engine is mounted (default: transit).
        #[arg(long)]
        mount: Option<String>,
        /// The environment variable holding the token.
        #[arg(
            long,
            value_name = "VAR",
            required_unless_present_any = ["token_file", "aws"],
            conflicts_with = "token_file"
        )]
        token_env: Option<String>,
        /// A file holding the token (mode 600).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// AWS KMS: send every region's requests here (an emulator, or one
        /// region's VPC endpoint) instead of kms.REGION.amazonaws.com.
        #[arg(long, value_name = "URL", requires = "aws")]
        endpoint: Option<String>,
        /// AWS KMS: a file holding the credentials (mode 600), one profile
        /// in the AWS credentials format (aws_access_key_id = …,
        /// aws_secret_access_key = …).
        #[arg(long, value_name = "FILE", requires = "aws")]
        credentials_file: Option<PathBuf>,
        /// A PEM file of the CA that issued the server's certificate (a
        /// private CA), trusted besides the system's.
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// How long one request may take before the service counts as
        /// unavailable (for example 2s; 5s by default).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// List the key services.
    List,
    /// Create a key (aes256-gcm96, not exportable) in a key service, for an
    /// operator who runs that service too.
    CreateKey {
        /// The key service.
        name: String,
        /// The key's name there.
        key: String,
    },
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant: service-managed, or with customer keys in two
    /// PKCS#11 tokens (the token PIN is read from --pin-env).
    Create {
        /// The tenant's name.
        name: String,
        /// Root keys held by the customer in two PKCS#11 tokens.
        #[arg(long, requires_all = ["module", "token_a", "token_b", "key_a", "key_b"])]
        customer_key: bool,
        /// The PKCS#11 module (for example /usr/lib/softhsm/libsofthsm2.so).
        #[arg(long)]
        module: Option<PathBuf>,
        /// The label of the first token.
        #[arg(long)]
        token_a: Option<String>,
        /// The label of the second token.
        #[arg(long)]
        token_b: Option<String>,
        /// The key's label in the first token.
        #[arg(long)]
        key_a: Option<String>,
        /// The key's label in the second token.
        #[arg(long)]
        key_b: Option<String>,
        /// Provider name for the first token.
        #[arg(long, default_value = "hsm-a")]
        provider_a: String,
        /// Provider name for the second token.
        #[arg(long, default_value = "hsm-b")]
        provider_b: String,
        /// The environment variable holding the tokens' user PIN.
        #[arg(long, default_value = "ATREST_PKCS11_PIN")]
        pin_env: String,
        /// Generate the keys in the tokens (sensitive, not extractable).
        #[arg(long)]
        generate: bool,
        /// Root keys held by the customer in configured key services (or
        /// tokens): two references, PROVIDER:KEY@VERSION, comma-separated.
        #[arg(
            long,
            value_name = "REF,REF",
            value_delimiter = ',',
            conflicts_with = "customer_key"
        )]
        customer_keys: Vec<String>,
    },
    /// List tenants.
    List,
    /// Show a tenant's keys and state.
    Show {
        /// The tenant.
        name: String,
    },
    /// Tag the tenant names of a deployment made before names were tagged
    /// (each under its tenant's key), so that they are used again. Run it
    /// once after upgrading, on a database known to be untouched: it
    /// trusts each untagged name as it is.
    TagNames,
    /// Set when a customer-key tenant's users may be served through the
    /// availability key while its customer keys are unavailable (never
    /// when they refuse): `automatic` (on any outage), `declared` (only
    /// during an outage window declared with `tenant outage`), `never`.
    Fallback {
        /// The tenant.
        name: String,
        /// The policy.
        #[arg(value_enum)]
        policy: FallbackArg,
    },
    /// Accept a tenant's record as the database holds it after a backup of
    /// the database was restored: the record of a tenant that changed
    /// since the backup is an older copy, refused (exit 5) until accepted.
    /// Check the revocation marks and fallback policy it shows. Audited.
    AcceptRestored {
        /// The tenant's id (the refusal names it; its name cannot be
        /// checked until its record is accepted).
        id: atrest::filekey::TenantId,
    },
    /// Declare an outage window of a tenant's customer keys (its policy
    /// must be `declared`), during which its users are served through the
    /// availability key; or end it.
    Outage {
        /// The tenant.
        name: String,
        /// How long the window lasts (for example 2h).
        #[arg(long = "for", value_name = "DURATION", value_parser = humantime::parse_duration,
              required_unless_present = "end", conflicts_with = "end")]
        duration: Option<std::time::Duration>,
        /// When it begins (RFC 3339, for example 2026-12-07T10:00:00Z); now
        /// by default.
        #[arg(long, value_name = "TIME", value_parser = humantime::parse_rfc3339_weak,
              conflicts_with = "end")]
        from: Option<std::time::SystemTime>,
        /// Why (kept in the tenant's record and the audit trail).
        #[arg(long, required_unless_present = "end", conflicts_with = "end")]
        reason: Option<String>,
        /// End the declared window now.
        #[arg(long)]
        end: bool,
    },
}

/// A fallback policy, as `atrest tenant fallback` takes it.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum FallbackArg {
    /// On any outage of the customer keys.
    Automatic,
    /// Only during a declared outage window.
    Declared,
    /// Never.
    Never,
}

#[derive(Subcommand)]
pub(crate) enum RotateCommand {
    /// Roll a tenant's TIK and re-wrap its file keys under the new version.
    Tik {
        /// The tenant.
        tenant: String,
    },
    /// Roll the service root key (or the availability key).
    RootKey {
        /// Roll the availability key instead.
        #[arg(long)]
        availability: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Verify the hash chain, the log's last signed checkpoint and the
    /// witness's newest checkpoint. Pass --key and --witness from a source
    /// the deployment's writers cannot change.
    Verify {
        /// The verifying key `init` printed (default: the one in
        /// DATA/atrest.json).
        #[arg(long)]
        key: Option<String>,
        /// The witness directory (default: the one in DATA/atrest.json).
        #[arg(long, value_name = "DIR")]
        witness: Option<PathBuf>,
    },
    /// Recover from a damaged audit log, which stops every command that
    /// writes to it (`atrest audit verify` says where it is damaged): set
    /// it aside whole, as evidence (DATA/audit.set-aside/TIME-LOGID), and
    /// begin a new log whose first record, signed and witnessed, says where
    /// the old one went and what was wrong. Stop every other process using
    /// the deployment first.
    Recover {
        /// The verifying key `init` printed, from where you keep it: it
        /// must be the deployment's.
        #[arg(long)]
        key: String,
    },
    /// Check a mailbox move through the service (`mailbox-move --to`)
    /// against the source's journal, item by item: every item the journal
    /// says is stored was sealed once by this deployment for the move (same
    /// file, version and size), every seal made for the move is in the
    /// journal, and the move's records on both sides agree. Both trails are
    /// verified first. Exits 5 if they disagree.
    CheckMove {
        /// The source's journal directory (a copy of it will do).
        #[arg(long, value_name = "DIR")]
        journal: PathBuf,
        /// The journal's verifying key, as `mailbox-move` printed it when it
        /// made the journal (default: the key kept in the journal's
        /// directory, which whoever could rewrite the journal could have
        /// replaced).
        #[arg(long, value_name = "KEY")]
        journal_key: Option<String>,
        /// This deployment's verifying key, as `init` printed it (default:
        /// the one in DATA/atrest.json).
        #[arg(long)]
        key: Option<String>,
        /// The move (default: the journal's last complete move).
        #[arg(long = "move", value_name = "ID")]
        move_id: Option<String>,
    },
    /// Print audit records as a table (with --json: the raw records).
    Show {
        /// Include the log's own checkpoint lines (one ends every commit
        /// batch).
        #[arg(long)]
        checkpoints: bool,
        /// Only this tenant's records.
        #[arg(long)]
        tenant: Option<String>,
        /// Only the last N records.
        #[arg(long)]
        last: Option<usize>,
    },
}
