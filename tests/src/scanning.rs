//! A secret scanning reporter for the tests (SPEC §17): a P-256 key pair
//! made from the OS CSPRNG, its public key as the PEM file
//! `serve --secret-scanning-key` reads, and reports in GitHub's partner
//! format signed the way GitHub signs them. (The control plane's tests use
//! this file too.)

use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePublicKey, LineEnding};
use std::path::{Path, PathBuf};

/// The signature header.
pub const SIGNATURE: &str = "Github-Public-Key-Signature";
/// The key identifier header.
pub const KEY_ID: &str = "Github-Public-Key-Identifier";

/// A reporter: its key identifier and signing key.
pub struct Reporter {
    pub id: String,
    key: SigningKey,
}

impl Reporter {
    /// A reporter named `id` with a fresh key pair.
    pub fn new(id: &str) -> Reporter {
        let key = loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).unwrap();
            // A scalar out of range (once in 2^32 tries) is drawn again.
            if let Ok(key) = SigningKey::from_slice(&secret) {
                break key;
            }
        };
        Reporter {
            id: id.to_string(),
            key,
        }
    }

    /// Writes the public key (PEM SPKI) into `dir`; returns the
    /// `--secret-scanning-key` value `ID=FILE`.
    pub fn key_flag(&self, dir: &Path) -> String {
        let pem = self
            .key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let file: PathBuf = dir.join(format!("{}.pem", self.id));
        std::fs::write(&file, pem).unwrap();
        format!("{}={}", self.id, file.display())
    }

    /// The two headers of `body` signed by this reporter.
    pub fn headers(&self, body: &str) -> [(&'static str, String); 2] {
        let signature: Signature = self.key.sign(body.as_bytes());
        let der = base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes());
        [(KEY_ID, self.id.clone()), (SIGNATURE, der)]
    }
}

/// A report of `tokens`, each found at `url` in a commit.
pub fn report(tokens: &[&str], url: &str) -> String {
    let items: Vec<serde_json::Value> = tokens
        .iter()
        .map(|t| serde_json::json!({"token": t, "type": "keygate_api_key", "url": url, "source": "commit"}))
        .collect();
    serde_json::Value::Array(items).to_string()
}
