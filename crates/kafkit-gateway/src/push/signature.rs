//! [`Signer`]: Standard Webhooks signatures (<https://www.standardwebhooks.com>, as the
//! `standardwebhooks` npm and PyPI packages verify them): `webhook-id`, `webhook-timestamp`
//! (Unix seconds) and `webhook-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret so an endpoint can
//! rotate secrets without a gap.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use kafkit::secret::Secret;

/// The message id header (kafkit sends the delivery id: the same on every attempt).
pub const WEBHOOK_ID: &str = "webhook-id";
/// The signing time header, in Unix seconds.
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The signatures header.
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// Prefix of a Standard Webhooks secret; the rest is base64.
pub const SECRET_PREFIX: &str = "whsec_";

/// Signs request bodies with one or more secrets.
#[derive(Clone)]
pub struct Signer {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({} secrets: ***)", self.keys.len())
    }
}

impl Signer {
    /// A signer of `secrets`, each `whsec_<base64>`; the error gives the index of the first bad
    /// one and why.
    pub fn new(secrets: &[Secret]) -> Result<Self, (usize, String)> {
        let mut keys = Vec::with_capacity(secrets.len());
        for (i, secret) in secrets.iter().enumerate() {
            let encoded = secret
                .expose()
                .strip_prefix(SECRET_PREFIX)
                .ok_or_else(|| (i, format!("must start with {SECRET_PREFIX:?}")))?;
            let key = STANDARD
                .decode(encoded)
                .map_err(|e| (i, format!("not base64 after {SECRET_PREFIX:?}: {e}")))?;
            if key.is_empty() {
                return Err((i, "the key is empty".into()));
            }
            keys.push(key);
        }
        Ok(Signer { keys })
    }

    /// The `webhook-signature` value for `body` sent as message `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut out = String::new();
        for key in &self.keys {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The reference libraries' test vector (standard-webhooks, javascript/src/index.test.ts).
        let signer = Signer::new(&[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]).unwrap();
        let signature = signer.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn several_secrets_give_several_signatures() {
        let one = Signer::new(&[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]).unwrap();
        let two = Signer::new(&[
            Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Secret::new("whsec_c2Vjb25k"),
        ])
        .unwrap();
        let first = one.sign("id", 1, b"x");
        let both = two.sign("id", 1, b"x");
        assert!(both.starts_with(&format!("{first} v1,")), "{both}");
        assert_eq!(both.split(' ').count(), 2);
        assert!(!format!("{two:?}").contains("MfKQ"));
    }

    #[test]
    fn bad_secrets_are_refused_with_their_index() {
        let err =
            Signer::new(&[Secret::new("whsec_c2Vjb25k"), Secret::new("c2Vjb25k")]).unwrap_err();
        assert_eq!(err.0, 1);
        assert!(err.1.contains("whsec_"));
        let err = Signer::new(&[Secret::new("whsec_!!!")]).unwrap_err();
        assert!(err.1.contains("base64"), "{}", err.1);
    }
}
