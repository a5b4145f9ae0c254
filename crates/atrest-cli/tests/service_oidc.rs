//! `atrest-serve` accepting the JWT access tokens of a real OpenID
//! provider (the npm package `oidc-provider`, started by the project's
//! scripts: `ATREST_OIDC_ISSUER`), its clients authenticating with the
//! client-credentials grant as service principals of a tenant. The
//! identity system decides the tenant: a token's `tenant_id` claim.
//! Every usual attack is refused: expired, another audience, another
//! issuer signing with the same keys, `alg: none`, an HMAC signed with the
//! provider's public key, a key the provider does not publish, a changed
//! signature; a token of another tenant gets nothing of this one.

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod service_support;

use std::path::Path;
use std::time::Duration;

use atrest_test_support::TempDir;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use service_support::{Instance, atrest, bearer, request, token};

/// The audience this service's tokens are for.
const AUDIENCE: &str = "https://files.atrest.test";

fn issuer(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set: run the tests with scripts/test or scripts/with-servers")
    })
}

/// `http://HOST:PORT` → `HOST:PORT`.
fn host(url: &str) -> &str {
    url.strip_prefix("http://").unwrap()
}

/// A client of `issuer` registered with `metadata` (dynamic registration):
/// `(client_id, client_secret)`.
fn register(issuer: &str, metadata: Value) -> (String, String) {
    let mut body = json!({
        "grant_types": ["client_credentials"],
        "response_types": [],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
    });
    for (k, v) in metadata.as_object().unwrap() {
        body[k] = v.clone();
    }
    let answer = request(
        host(issuer),
        "POST",
        "/reg",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(answer.status, 201, "{}", answer.text());
    let client: Value = serde_json::from_slice(&answer.body).unwrap();
    (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// An access token for `client` meant for `audience`.
fn access_token(issuer: &str, (id, secret): &(String, String), audience: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    let form = format!(
        "grant_type=client_credentials&scope=files&resource={}",
        audience.replace(':', "%3A").replace('/', "%2F")
    );
    let answer = request(
        host(issuer),
        "POST",
        "/token",
        &[
            ("Authorization", &format!("Basic {basic}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        form.as_bytes(),
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let token: Value = serde_json::from_slice(&answer.body).unwrap();
    token["access_token"].as_str().unwrap().to_owned()
}

fn tenant_id(data: &Path, name: &str) -> String {
    let shown: Value =
        serde_json::from_str(&atrest(data, &["--json", "tenant", "show", name])).unwrap();
    shown["id"].as_str().unwrap().to_owned()
}

/// A token's three parts, decoded: header, claims, signature.
fn parts(token: &str) -> (Value, Value, Vec<u8>) {
    let mut parts = token.split('.');
    let header = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let signature = B64.decode(parts.next().unwrap()).unwrap();
    (header, claims, signature)
}

fn compact(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        B64.encode(signature)
    )
}

/// An ES256 key the provider does not publish (PEM, made by OpenSSL).
fn foreign_key(dir: &Path) -> jsonwebtoken::EncodingKey {
    let path = dir.join("foreign.pem");
    let output = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn access_tokens_of_the_openid_provider_sign_in_and_every_forgery_is_refused() {
    let issuer_url = issuer("ATREST_OIDC_ISSUER");
    let rogue_url = issuer("ATREST_OIDC_ROGUE_ISSUER");
    let dir = TempDir::new("service-oidc");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    atrest(&data, &["tenant", "create", "contoso"]);
    atrest(&data, &["tenant", "create", "fabrikam"]);
    let contoso = tenant_id(&data, "contoso");
    let fabrikam = tenant_id(&data, "fabrikam");
    let instance = Instance::start(
        &data,
        "service-oidc",
        &[],
        &[
            "--oidc-issuer",
            &issuer_url,
            "--oidc-audience",
            AUDIENCE,
            "--oidc-leeway",
            "0s",
        ],
    );
    assert!(
        instance.log().contains("accepting access tokens of"),
        "{}",
        instance.log()
    );
    let call = |method: &str, path: &str, token: &str, body: &[u8]| {
        let (name, value) = bearer(token);
        request(
            &instance.addr,
            method,
            path,
            &[(name, value.as_str())],
            body,
        )
    };
    let file = "/v1/tenants/contoso/files/minutes.txt";

    // A service principal of contoso, its token signed with each kind of
    // key the provider has: in, as `CLIENT_ID@contoso`.
    let mut valid = String::new();
    for alg in ["ES256", "RS256", "PS256", "EdDSA"] {
        let client = register(
            &issuer_url,
            json!({ "tenant_id": contoso, "access_token_alg": alg }),
        );
        valid = access_token(&issuer_url, &client, AUDIENCE);
        assert_eq!(parts(&valid).0["alg"], alg);
        let put = call(
            "PUT",
            file,
            &valid,
            format!("sealed under {alg}").as_bytes(),
        );
        assert_eq!(put.status, 201, "{alg}: {}\n{}", put.text(), instance.log());
        let got = call("GET", file, &valid, b"");
        assert_eq!(got.text(), format!("sealed under {alg}"));
    }
    let (_, claims, _) = parts(&valid);
    let subject = claims["sub"].as_str().unwrap().to_owned();
    let audit = atrest(&data, &["--json", "audit", "show", "--tenant", "contoso"]);
    assert!(
        audit.contains(&format!("{subject}@contoso")),
        "the audit trail names the provider's principal"
    );

    // A service principal of fabrikam: its own tenant, not contoso's.
    let fabrikam_client = register(&issuer_url, json!({ "tenant_id": fabrikam }));
    let theirs = access_token(&issuer_url, &fabrikam_client, AUDIENCE);
    let put = call(
        "PUT",
        "/v1/tenants/fabrikam/files/a",
        &theirs,
        b"fabrikam's",
    );
    assert_eq!(put.status, 201, "{}", put.text());
    let other_tenant = call("GET", file, &theirs, b"");
    assert_eq!(other_tenant.status, 403, "{}", other_tenant.text());
    assert!(!other_tenant.text().contains("sealed under"));

    // The attacks, each 401 with nothing of the file.
    let mut attacks: Vec<(&str, String)> = Vec::new();
    // Expired (a client whose tokens live one second; no leeway).
    let short = register(
        &issuer_url,
        json!({ "tenant_id": contoso, "access_token_ttl": 1 }),
    );
    let expired = access_token(&issuer_url, &short, AUDIENCE);
    // Meant for another service.
    let elsewhere = access_token(
        &issuer_url,
        &register(&issuer_url, json!({ "tenant_id": contoso })),
        "https://other.example",
    );
    attacks.push(("another audience", elsewhere));
    // Another issuer with the same signing keys.
    let rogue = access_token(
        &rogue_url,
        &register(&rogue_url, json!({ "tenant_id": contoso })),
        AUDIENCE,
    );
    assert_eq!(
        request(host(&rogue_url), "GET", "/jwks", &[], b"").body,
        request(host(&issuer_url), "GET", "/jwks", &[], b"").body,
        "the rogue issuer signs with the provider's keys"
    );
    attacks.push(("another issuer", rogue));
    // `alg: none`, no signature.
    let (header, claims, signature) = parts(&valid);
    let mut none = header.clone();
    none["alg"] = json!("none");
    attacks.push(("alg none", compact(&none, &claims, &[])));
    attacks.push((
        "alg none with the signature",
        compact(&none, &claims, &signature),
    ));
    // HS256 keyed with the provider's published key (as text and as the
    // RSA modulus): the algorithm-confusion attack.
    let jwks = request(host(&issuer_url), "GET", "/jwks", &[], b"");
    let published: Value = serde_json::from_slice(&jwks.body).unwrap();
    let rsa = published["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|key| key["kty"] == "RSA")
        .unwrap()
        .clone();
    for secret in [
        rsa.to_string().into_bytes(),
        B64.decode(rsa["n"].as_str().unwrap()).unwrap(),
    ] {
        let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        hs.kid = Some(rsa["kid"].as_str().unwrap().to_owned());
        let forged = jsonwebtoken::encode(
            &hs,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        attacks.push(("HMAC with the public key", forged));
    }
    // Signed with a key the provider does not publish: under a made-up
    // key id, and under the id of a published key.
    let foreign = foreign_key(dir.path());
    // (The first key id would, unescaped, write a line of its own into the
    // service's text log.)
    let injected = "made-up\n2026-01-01T00:00:00Z  INFO forged line";
    for kid in [injected, header["kid"].as_str().unwrap()] {
        let mut es = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        es.kid = Some(kid.to_owned());
        let forged = jsonwebtoken::encode(&es, &claims, &foreign).unwrap();
        attacks.push(("a key the provider does not publish", forged));
    }
    // A valid token with its claims changed (another tenant's id), or its
    // signature changed.
    let fabrikam_parts = parts(&theirs);
    let mut changed = fabrikam_parts.1.clone();
    changed["tenant_id"] = json!(contoso);
    attacks.push((
        "claims changed",
        compact(&fabrikam_parts.0, &changed, &fabrikam_parts.2),
    ));
    let mut flipped = signature.clone();
    flipped[10] ^= 1;
    attacks.push(("signature changed", compact(&header, &claims, &flipped)));
    // The token's parts out of place.
    attacks.push(("not a JWT", format!("{valid}.extra")));

    std::thread::sleep(Duration::from_millis(2_100));
    attacks.push(("expired", expired));
    for (attack, forged) in &attacks {
        for (method, body) in [("GET", &b""[..]), ("PUT", &b"overwritten"[..])] {
            let answer = call(method, file, forged, body);
            assert_eq!(answer.status, 401, "{attack} ({method}): {}", answer.text());
            assert!(
                answer
                    .header("www-authenticate")
                    .is_some_and(|value| value.starts_with("Bearer")),
                "{attack}"
            );
            assert!(!answer.text().contains("sealed under"), "{attack}");
        }
    }
    // Nothing the attacks sent was stored.
    let got = call("GET", file, &valid, b"");
    assert_eq!(got.text(), "sealed under EdDSA");
    let log = instance.log();
    for why in [
        "expired",
        "meant for another audience",
        "issued by another issuer",
        "algorithm",
        "does not publish",
        "the signature does not verify",
    ] {
        assert!(log.contains(why), "the log says {why:?}:\n{log}");
    }
    assert!(
        !log.lines().any(|line| line.contains("INFO forged line")
            && !line.contains("access token refused")),
        "a client wrote a line into the log:\n{log}"
    );
    assert!(log.contains("made-up\\n2026"), "{log}");

    // A token of a tenant this deployment does not have, and one without
    // a tenant claim at all.
    let stranger = register(
        &issuer_url,
        json!({ "tenant_id": "00000000-0000-4000-8000-000000000000" }),
    );
    let stranger = access_token(&issuer_url, &stranger, AUDIENCE);
    assert_eq!(call("GET", file, &stranger, b"").status, 403);
    let tenantless = register(&issuer_url, json!({}));
    let tenantless = access_token(&issuer_url, &tenantless, AUDIENCE);
    assert_eq!(call("GET", file, &tenantless, b"").status, 401);

    // The token file's tokens still work beside the provider's.
    let static_token = token(&data, "alice@contoso");
    assert_eq!(call("GET", file, &static_token, b"").status, 200);
}

#[test]
fn a_provider_that_names_another_issuer_or_is_not_https_is_refused_at_start() {
    let issuer_url = issuer("ATREST_OIDC_ISSUER");
    let dir = TempDir::new("service-oidc-start");
    let data = dir.path().join("data");
    atrest(&data, &["init"]);
    for (issuer, why) in [
        // The discovery document names the issuer without the slash.
        (format!("{issuer_url}/"), "names issuer"),
        (
            "http://files.example.com".to_owned(),
            "not an https address",
        ),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
            .arg("--data")
            .arg(&data)
            .args(["serve", "--plain-http", "--listen", "127.0.0.1:0"])
            .args(["--oidc-issuer", &issuer, "--oidc-audience", AUDIENCE])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{issuer}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(why), "{issuer}: {stderr}");
    }
    // HMAC is never an accepted algorithm.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_atrest-serve"))
        .arg("--data")
        .arg(&data)
        .args(["serve", "--plain-http", "--listen", "127.0.0.1:0"])
        .args(["--oidc-issuer", &issuer_url, "--oidc-audience", AUDIENCE])
        .args(["--oidc-algorithms", "RS256,HS256"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
