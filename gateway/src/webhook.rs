//! Webhook notifications: one JSON POST per URL, 5 s each; the result is for the audit log.

use std::time::Duration;

/// POSTs `body` as JSON to `url`: whether it answered 2xx, and its status or the error.
pub(crate) async fn post(url: &str, body: &impl serde::Serialize) -> (bool, String) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => return (false, format!("webhook client: {e}")),
    };
    match client.post(url).json(body).send().await {
        Ok(r) => (r.status().is_success(), r.status().to_string()),
        Err(e) => (false, e.to_string()),
    }
}
