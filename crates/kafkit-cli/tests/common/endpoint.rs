//! The Node.js push endpoint of the end-to-end tests (`interop/push-endpoint.js`, plain
//! `node:http`): it behaves as its JSON argument says and logs every request it answered; the
//! Rust test is the oracle.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// The Node endpoint: its port and every request it answered, in answer order.
pub struct Endpoint {
    child: Child,
    port: u16,
    scheme: String,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Endpoint {
    /// Starts `push-endpoint.js` with `behaviour` and waits until it listens.
    pub fn start(behaviour: Value) -> Endpoint {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop");
        assert!(
            dir.join("node_modules/standardwebhooks").is_dir(),
            "standardwebhooks is not installed in {}: run `npm ci` there",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg(dir.join("push-endpoint.js"))
            .arg(behaviour.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = first["listening"].as_u64().unwrap() as u16;
        let scheme = first["scheme"].as_str().unwrap_or("http").to_owned();
        let requests = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let requests = requests.clone();
            move || {
                for line in lines.map_while(Result::ok) {
                    requests
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                }
            }
        });
        Endpoint {
            child,
            port,
            scheme,
            requests,
        }
    }

    /// The endpoint's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}` (`https://localhost:PORT{path}` with TLS: the name its
    /// certificate is for).
    pub fn url(&self, path: &str) -> String {
        match self.scheme.as_str() {
            "https" => format!("https://localhost:{}{path}", self.port),
            _ => format!("http://127.0.0.1:{}{path}", self.port),
        }
    }

    /// Every request answered so far, in answer order.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().unwrap().clone()
    }

    /// Delivery ids answered with a 2xx (for a batch request: its records answered `done`).
    pub fn delivered(&self) -> BTreeSet<String> {
        let mut ids = BTreeSet::new();
        for r in self.requests() {
            if r["status"].as_u64().unwrap() / 100 != 2 {
                continue;
            }
            match r["batch"].as_array() {
                Some(items) => ids.extend(
                    items
                        .iter()
                        .filter(|i| i["outcome"] == "done")
                        .map(|i| i["id"].as_str().unwrap().to_owned()),
                ),
                None => {
                    ids.insert(r["id"].as_str().unwrap().to_owned());
                }
            }
        }
        ids
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
