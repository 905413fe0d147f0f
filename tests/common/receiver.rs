//! A webhook receiver on 127.0.0.1 for the tests of what rollwise sends
//! (notifications, check webhooks): it records every JSON body and answers
//! with a status code the test sets.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

pub struct Receiver {
    /// `http://127.0.0.1:PORT{path}`.
    pub url: String,
    status: AtomicU16,
    bodies: Mutex<Vec<Value>>,
}

impl Receiver {
    /// Listen on a free port; `path` only goes into [`Receiver::url`] (every
    /// path is answered), `status` is the first answer.
    pub async fn start(path: &str, status: u16) -> Arc<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("its address");
        let receiver = Arc::new(Receiver {
            url: format!("http://{addr}{path}"),
            status: AtomicU16::new(status),
            bodies: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    /// Answer `status` from now on.
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Every body received, oldest first (`null` for one that is not JSON).
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `kind reason` of each body received (notifications).
    pub fn received(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| format!("{} {}", b["kind"], b["reason"]).replace('"', ""))
            .collect()
    }
}

async fn receive(State(r): State<Arc<Receiver>>, body: Bytes) -> (StatusCode, &'static str) {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.bodies
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(body);
    let code = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    (code, "answer from the test receiver")
}
