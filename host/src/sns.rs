//! The daemon side of Amazon SNS: fetching signing certificates (only from
//! `https://sns.<region>.amazonaws.com/<name>.pem`, no redirects, bounded
//! size and time) into the shared cache, and handling verified subscription
//! confirmations: opened when the URL, the topic and `auto_confirm` allow
//! it, otherwise kept as pending for `/v1/status` and logged with the URL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::runtime::sns::{
    self, CertificateCache, MAX_CERTIFICATE_BYTES, SnsSettings, SubscriptionRequest,
};

/// Test-only: an `http://127.0.0.1:PORT` origin that replaces
/// `https://sns.<region>.amazonaws.com` in every URL the daemon opens, so
/// tests can serve certificates and confirmations locally. Warned at start.
pub const TEST_ORIGIN_ENV: &str = "MAILPLUG_TEST_SNS_ORIGIN";

/// Time limit of one certificate fetch or confirmation.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Confirmations remembered (the oldest are dropped beyond it).
const MAX_CONFIRMATIONS: usize = 256;

/// What became of a subscription confirmation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ConfirmationState {
    /// Not opened; `reason` says why and the operator opens `subscribe_url`.
    Pending {
        /// Why the daemon did not confirm it.
        reason: String,
    },
    /// The daemon opened the URL and SNS answered 200.
    Confirmed,
    /// The daemon opened the URL and it failed.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One subscription confirmation a connection received.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Confirmation {
    /// The connection it arrived on.
    pub connection: String,
    /// The topic.
    pub topic_arn: String,
    /// The URL that confirms it.
    pub subscribe_url: String,
    /// When it arrived, Unix seconds.
    pub received_at: i64,
    /// The outcome.
    #[serde(flatten)]
    pub state: ConfirmationState,
}

/// The daemon's SNS state.
#[derive(Debug, Default)]
pub struct SnsHost {
    /// Public keys of fetched certificates.
    pub cache: Arc<CertificateCache>,
    /// [`TEST_ORIGIN_ENV`], when set.
    test_origin: Option<String>,
    /// Latest confirmation per (connection, topic).
    confirmations: Mutex<BTreeMap<(String, String), Confirmation>>,
}

impl SnsHost {
    /// Reads [`TEST_ORIGIN_ENV`] (warning loudly when it is set).
    pub fn from_env() -> Self {
        let test_origin = std::env::var(TEST_ORIGIN_ENV)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.trim_end_matches('/').to_owned());
        if let Some(origin) = &test_origin {
            tracing::warn!(
                "{TEST_ORIGIN_ENV}={origin}: SNS certificates and confirmations are fetched from this origin instead of Amazon (tests only)"
            );
        }
        Self {
            test_origin,
            ..Self::default()
        }
    }

    /// The URL actually opened for `url` (already checked against the SNS pattern).
    fn target(&self, url: &str) -> String {
        match &self.test_origin {
            Some(origin) => format!("{origin}{}", sns::sns_path(url).unwrap_or("/")),
            None => url.to_owned(),
        }
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .https_only(self.test_origin.is_none())
            .proxy(None)
            .timeout_global(Some(FETCH_TIMEOUT))
            .user_agent(concat!("mailplug/", env!("CARGO_PKG_VERSION")))
            .build()
            .into()
    }

    /// Fetches the certificate at `url` (checked again here), and caches its
    /// public key. Blocking: call it off the async runtime.
    pub fn fetch_certificate(&self, url: &str, now: i64) -> Result<(), String> {
        sns::check_certificate_url(url)?;
        let target = self.target(url);
        let mut response = self
            .agent()
            .get(&target)
            .call()
            .map_err(|e| format!("fetching {url}: {e}"))?;
        if response.status() != 200 {
            return Err(format!(
                "fetching {url}: HTTP {} (redirects are not followed)",
                response.status().as_u16()
            ));
        }
        let pem = response
            .body_mut()
            .with_config()
            .limit(MAX_CERTIFICATE_BYTES as u64)
            .read_to_vec()
            .map_err(|e| format!("reading {url}: {e}"))?;
        let key = sns::public_key_of_pem(&pem, now).map_err(|e| format!("{url}: {e}"))?;
        self.cache.insert(url, key);
        tracing::info!(%url, "SNS signing certificate fetched and cached");
        Ok(())
    }

    /// Handles one verified confirmation of `connection`: opens the URL when
    /// everything allows it, else records it as pending. Blocking.
    pub fn confirm(
        &self,
        connection: &str,
        settings: Option<&SnsSettings>,
        request: SubscriptionRequest,
        now: i64,
    ) -> ConfirmationState {
        let listed = settings.is_some_and(|s| s.topics.contains(&request.topic_arn));
        let why_not = if let Err(e) = sns::check_subscribe_url(&request.subscribe_url) {
            Some(e)
        } else if !listed {
            Some(format!(
                "topic {} is not in webhook.sns.topics",
                request.topic_arn
            ))
        } else if !settings.is_some_and(|s| s.auto_confirm) {
            Some("webhook.sns.auto_confirm is off".to_owned())
        } else {
            None
        };
        let state = match why_not {
            Some(reason) => {
                tracing::warn!(
                    connection,
                    topic = %request.topic_arn,
                    subscribe_url = %request.subscribe_url,
                    "SNS subscription confirmation pending ({reason}); open the subscribe_url to confirm it"
                );
                ConfirmationState::Pending { reason }
            }
            None => match self.open(&request.subscribe_url) {
                Ok(()) => {
                    tracing::info!(connection, topic = %request.topic_arn, "SNS subscription confirmed");
                    ConfirmationState::Confirmed
                }
                Err(error) => {
                    tracing::warn!(
                        connection,
                        topic = %request.topic_arn,
                        subscribe_url = %request.subscribe_url,
                        "SNS subscription confirmation failed ({error}); open the subscribe_url to confirm it"
                    );
                    ConfirmationState::Failed { error }
                }
            },
        };
        self.record(Confirmation {
            connection: connection.to_owned(),
            topic_arn: request.topic_arn,
            subscribe_url: request.subscribe_url,
            received_at: now,
            state: state.clone(),
        });
        state
    }

    fn open(&self, url: &str) -> Result<(), String> {
        let response = self
            .agent()
            .get(self.target(url))
            .call()
            .map_err(|e| format!("opening SubscribeURL: {e}"))?;
        match response.status().as_u16() {
            200 => Ok(()),
            code => Err(format!("SubscribeURL answered HTTP {code}")),
        }
    }

    fn record(&self, confirmation: Confirmation) {
        let Ok(mut all) = self.confirmations.lock() else {
            return;
        };
        if all.len() >= MAX_CONFIRMATIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, c)| c.received_at)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(
            (
                confirmation.connection.clone(),
                confirmation.topic_arn.clone(),
            ),
            confirmation,
        );
    }

    /// Every confirmation received, by connection and topic.
    pub fn confirmations(&self) -> Vec<Confirmation> {
        self.confirmations
            .lock()
            .map(|all| all.values().cloned().collect())
            .unwrap_or_default()
    }
}
