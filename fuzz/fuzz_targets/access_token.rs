//! What an OpenID provider and a client send the upload service: the
//! provider's JWKS document and a bearer JWT. Nothing may panic; a token
//! checked against keys made from the same bytes never verifies without
//! a signature.
#![no_main]

#[path = "../../crates/atrest-cli/src/bin/atrest-serve/oidc/token.rs"]
#[allow(dead_code)]
mod token;

use libfuzzer_sys::fuzz_target;

/// A published P-256 key (the provider's, in a real run).
const JWKS: &[u8] = br#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","kid":"es256-1","use":"sig","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},{"kty":"RSA","alg":"RS256","kid":"rs256-1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;

fuzz_target!(|data: &[u8]| {
    let rules = token::Rules {
        issuer: "https://id.example".to_owned(),
        audience: "https://files.example".to_owned(),
        algorithms: token::ASYMMETRIC.to_vec(),
        leeway: 60,
        tenant_claim: "tenant_id".to_owned(),
        subject_claim: "sub".to_owned(),
    };
    // A JWKS document of the fuzzer's, then a token.
    let (document, rest) = match data.split_first() {
        Some((&len, rest)) if usize::from(len) <= rest.len() => rest.split_at(usize::from(len)),
        _ => (&[][..], data),
    };
    let _ = token::Keys::from_jwks(document, &token::ASYMMETRIC);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(header) = token::header(text, &rules) else {
        return;
    };
    let keys = token::Keys::from_jwks(JWKS, &token::ASYMMETRIC).expect("the constant JWKS");
    assert_eq!(keys.len(), 2);
    if let Ok(identity) = token::verify(text, &header, &keys, &rules) {
        panic!("a token the fuzzer made verified: {identity:?}");
    }
});
