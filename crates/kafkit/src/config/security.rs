//! How the client authenticates and encrypts: TLS and SASL settings, secrets redacted.

use std::path::PathBuf;
use std::str::FromStr;

use crate::secret::Secret;

/// SASL mechanisms kafkit supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (only over TLS in production).
    Plain,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// SCRAM-SHA-512.
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "plain" => Ok(SaslMechanism::Plain),
            "scram-sha-256" => Ok(SaslMechanism::ScramSha256),
            "scram-sha-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "expected plain, scram-sha-256 or scram-sha-512, got {s:?}"
            )),
        }
    }
}

/// TLS settings. Paths are PEM files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tls {
    /// CA bundle to verify the brokers with (system store when absent).
    pub ca_location: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert_location: Option<PathBuf>,
    /// Client private key for mutual TLS.
    pub key_location: Option<PathBuf>,
    /// Password of the client private key.
    pub key_password: Option<Secret>,
    /// Verify the broker's certificate (turn off only for tests).
    pub verify_certificate: bool,
}

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password, redacted in all output.
    pub password: Secret,
}

/// How the client authenticates and encrypts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Security {
    /// TLS, when enabled.
    pub tls: Option<Tls>,
    /// SASL, when enabled.
    pub sasl: Option<Sasl>,
}

impl Security {
    /// The librdkafka `security.protocol` these settings imply.
    pub fn protocol(&self) -> &'static str {
        match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::from;

    #[test]
    fn secrets_never_reach_debug_output() {
        let config = from(&[
            ("KAFKA_SASL_MECHANISM", "plain"),
            ("KAFKA_SASL_USERNAME", "svc"),
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_KEY_PASSWORD", "keypass2"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("keypass2"),
            "{debug}"
        );
        assert!(debug.contains("***"));
    }
}
