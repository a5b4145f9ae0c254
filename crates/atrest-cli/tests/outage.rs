//! A deployment whose PostgreSQL server goes down (every connection to it
//! cut through a proxy, while the server keeps running for other tests):
//! the operator program exits 6 ("unavailable") and the upload service
//! answers 503, never a refusal, an integrity failure or a generic error;
//! once the server is back both serve again.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod servers_support;
mod service_support;

use std::path::Path;
use std::process::{Command, Output};

use atrest_test_support::TempDir;
use atrest_test_support::postgres::{admin_url, database_url, run_sql};
use atrest_test_support::proxy::Proxy;

use servers_support::unique;
use service_support::{Instance, bearer, request, token_in};

const URL_VAR: &str = "ATREST_TEST_METADATA_URL";

fn atrest(data: &Path, url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env(URL_VAR, url)
        .output()
        .unwrap()
}

fn expect(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_database_that_is_down_is_exit_6_and_503() {
    let admin = admin_url();
    let database = unique("atrest_outage_");
    run_sql(&admin, &format!("CREATE DATABASE {database}"));
    let direct = url::Url::parse(&database_url(&admin, &database)).unwrap();
    let proxy = Proxy::start((direct.host_str().unwrap(), direct.port().unwrap_or(5432)));
    let mut proxied = direct.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.addr().port())).unwrap();
    let url = proxied.to_string();

    let dir = TempDir::new("cli-outage");
    let data = dir.path().join("data");
    expect(
        &atrest(&data, &url, &["init", "--metadata-url-env", URL_VAR]),
        0,
        "init",
    );
    expect(
        &atrest(&data, &url, &["tenant", "create", "contoso"]),
        0,
        "tenant",
    );
    let file = dir.path().join("minutes.txt");
    std::fs::write(&file, b"minutes").unwrap();
    let put = |data: &Path| {
        atrest(
            data,
            &url,
            &[
                "put",
                "contoso",
                file.to_str().unwrap(),
                "--as",
                "alice@contoso",
            ],
        )
    };
    expect(&put(&data), 0, "put");
    let get = |data: &Path| {
        atrest(
            data,
            &url,
            &["get", "contoso", "minutes.txt", "--as", "alice@contoso"],
        )
    };
    expect(&get(&data), 0, "get");

    let env = [(URL_VAR.to_owned(), url.clone())];
    let token = token_in(&data, &env, "alice@contoso");
    let service = Instance::start(&data, "outage", &env, &[]);
    let auth = bearer(&token);
    let path = "/v1/tenants/contoso/files/minutes.txt";
    let get_http = || {
        request(
            &service.addr,
            "GET",
            path,
            &[(auth.0, auth.1.as_str())],
            b"",
        )
    };
    let put_http = || {
        request(
            &service.addr,
            "PUT",
            path,
            &[(auth.0, auth.1.as_str())],
            b"new",
        )
    };
    assert_eq!(get_http().status, 200);

    proxy.cut();
    expect(&get(&data), 6, "get with the database down");
    expect(&put(&data), 6, "put with the database down");
    expect(
        &atrest(&data, &url, &["ls"]),
        6,
        "ls with the database down",
    );
    let response = get_http();
    assert_eq!(response.status, 503, "{}", response.text());
    let response = put_http();
    assert_eq!(response.status, 503, "{}", response.text());

    proxy.restore();
    expect(&get(&data), 0, "get with the database back");
    let response = get_http();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.body, b"minutes");
    assert_eq!(put_http().status, 201);
    drop(service);
    run_sql(
        &admin,
        &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
    );
}
