//! Replacing the listener's certificate while it serves.
//!
//! Every handshake asks the [`CertStore`] for the certificate, and gets the `Arc` it holds at
//! that moment: a reload swaps the `Arc`, so connections already open keep theirs (nothing is
//! dropped) and every handshake after it gets the new one. [`run`] reloads on SIGHUP (always)
//! and when the files' content changes (read every `http.tls.reload_interval_ms`; reading two
//! small files is cheaper and more dependable than a file watcher across the symlink swaps of
//! Kubernetes secrets and the rename-into-place of renewal tools). A reload that fails (a file
//! missing, bad PEM, a key of another certificate — e.g. the certificate written before its
//! key) keeps the certificate in use, is logged once per content and counted; the next change
//! (the key arriving) is tried again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use super::{Loaded, ReloadLabels, TlsMetrics};
use crate::config::TlsConfig;

/// The certificate handshakes get: one `Arc`, swapped whole on reload.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Loaded>,
}

impl CertStore {
    /// A store serving `initial`.
    pub fn new(initial: Loaded) -> CertStore {
        CertStore {
            current: RwLock::new(initial),
        }
    }

    /// What is served now.
    pub fn current(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Serve `next` from the next handshake on.
    pub fn replace(&self, next: Loaded) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .key
                .clone(),
        )
    }
}

/// Why a reload is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: the operator asks; always tried.
    Signal,
    /// The periodic read of the files: tried when their content changed.
    Poll,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Poll => "file change",
        }
    }
}

/// The reload decision, pure: the content last tried, loaded or refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    last: [u8; 32],
}

impl Seen {
    /// Start from the content served at start.
    pub fn new(content: [u8; 32]) -> Seen {
        Seen { last: content }
    }

    /// Try a reload now? A signal always; a poll when the content differs from the last tried
    /// (so a broken file is reported once, not at every poll). Either way `content` becomes the
    /// last tried.
    pub fn should_try(&mut self, trigger: Trigger, content: [u8; 32]) -> bool {
        let changed = content != self.last;
        self.last = content;
        trigger == Trigger::Signal || changed
    }
}

/// A digest of the two files' content (or of why they could not be read), to notice changes.
pub fn content_digest(cert: &std::io::Result<Vec<u8>>, key: &std::io::Result<Vec<u8>>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [cert, key] {
        match part {
            Ok(bytes) => {
                h.update(b"ok");
                h.update((bytes.len() as u64).to_be_bytes());
                h.update(bytes);
            }
            Err(e) => {
                h.update(b"error");
                h.update(e.kind().to_string().as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// Keep `certs` fresh until the task is aborted: reload on `sighup` and on file change.
pub async fn run(
    cfg: TlsConfig,
    certs: Arc<CertStore>,
    metrics: TlsMetrics,
    mut sighup: Option<tokio::signal::unix::Signal>,
) {
    let mut seen = Seen::new(certs.current().files);
    let mut tick = (cfg.reload_interval_ms > 0).then(|| {
        let every = Duration::from_millis(cfg.reload_interval_ms);
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    loop {
        let signal = async {
            match sighup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let poll = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            got = signal => match got {
                Some(()) => Trigger::Signal,
                None => {
                    // The signal stream ended (never, in practice): keep polling.
                    sighup = None;
                    continue;
                }
            },
            () = poll => Trigger::Poll,
        };
        let cert = tokio::fs::read(&cfg.cert).await;
        let key = tokio::fs::read(&cfg.key).await;
        let digest = content_digest(&cert, &key);
        if !seen.should_try(trigger, digest) {
            continue;
        }
        let result = match (cert, key) {
            (Err(source), _) => Err(super::TlsError::Read {
                key: "http.tls.cert",
                path: cfg.cert.clone(),
                source,
            }),
            (_, Err(source)) => Err(super::TlsError::Read {
                key: "http.tls.key",
                path: cfg.key.clone(),
                source,
            }),
            (Ok(c), Ok(k)) => super::parse(&c, &k, &cfg.cert, &cfg.key),
        };
        match result {
            Ok(next) => {
                let before = certs.current().sha256;
                tracing::info!(
                    trigger = trigger.as_str(),
                    sha256 = %next.sha256,
                    previous = %before,
                    "http.tls: certificate reloaded; new handshakes get it, open connections keep theirs"
                );
                certs.replace(next);
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "ok" })
                    .inc();
                metrics.reload_failing.set(0);
            }
            Err(e) => {
                tracing::error!(
                    trigger = trigger.as_str(),
                    error = %e,
                    serving = %certs.current().sha256,
                    "http.tls: certificate reload failed; still serving the previous certificate"
                );
                metrics
                    .reloads
                    .get_or_create(&ReloadLabels { result: "error" })
                    .inc();
                metrics.reload_failing.set(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_retries_only_changed_content_and_a_signal_always() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut seen = Seen::new(a);
        assert!(
            !seen.should_try(Trigger::Poll, a),
            "unchanged: nothing to do"
        );
        assert!(seen.should_try(Trigger::Poll, b), "changed: try");
        assert!(
            !seen.should_try(Trigger::Poll, b),
            "a refused content is tried once"
        );
        assert!(seen.should_try(Trigger::Signal, b), "SIGHUP always tries");
        assert!(seen.should_try(Trigger::Poll, a), "changed back: try");
    }

    #[test]
    fn the_digest_tells_content_and_missing_files_apart() {
        let missing = || Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let d1 = content_digest(&Ok(b"ab".to_vec()), &Ok(b"c".to_vec()));
        let d2 = content_digest(&Ok(b"a".to_vec()), &Ok(b"bc".to_vec()));
        let d3 = content_digest(&missing(), &Ok(b"c".to_vec()));
        assert_ne!(d1, d2);
        assert_ne!(d1, d3);
        assert_eq!(d1, content_digest(&Ok(b"ab".to_vec()), &Ok(b"c".to_vec())));
    }
}
