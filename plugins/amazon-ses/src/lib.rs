//! First-party plugin `amazon-ses`: Amazon SES's regional SMTP endpoint,
//! and SES events delivered by an Amazon SNS HTTPS subscription: basic auth
//! from the subscription URL, then the SNS message signature (X.509,
//! SHA1withRSA or SHA256withRSA) with the signing certificate the host
//! holds, the topic allowlist and a one-hour replay window; subscription
//! confirmations are handed to the host.

use mailplug_sdk::event::limits;
use mailplug_sdk::prelude::*;

mod adapt;
mod ses;
mod sns;

pub struct AmazonSes;

impl Plugin for AmazonSes {
    const ID: &'static str = "amazon-ses";

    fn info() -> Info {
        Info::new("Amazon SES", env!("CARGO_PKG_VERSION"))
            .options::<adapt::Options>()
            .adapts_smtp()
            .webhooks("amazon-sns-x509")
    }

    fn adapt_connection(
        options: &str,
        overrides: SmtpOverrides,
    ) -> Result<SmtpSettings, Vec<FieldError>> {
        adapt::adapt(options, overrides)
    }

    /// `webhook.secret` is `user:password`, the basic-auth credentials of
    /// the subscription URL (`https://user:password@host/webhooks/conn`).
    /// They are checked first: a request without them never gets as far
    /// as the signing certificate.
    fn verify_webhook(request: &WebhookRequest, secret: &str) -> Result<(), VerifyError> {
        verify::basic_auth(request, secret)?;
        sns::verify(request)
    }

    fn parse_webhook(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
        parse(request)
    }
}

mailplug_sdk::export!(AmazonSes);

/// The message of a JSON error, to re-wrap in another error type.
fn error_text(e: ParseError) -> String {
    let (ParseError::Malformed(m) | ParseError::Invalid(m)) = e;
    m
}

fn parse(request: &WebhookRequest) -> Result<Vec<DeliveryEvent>, ParseError> {
    let envelope = sns::Envelope::parse(&request.body).map_err(ParseError::Malformed)?;
    let kind = envelope.message_type().map_err(ParseError::Invalid)?;
    let topic = sns::required(&envelope.topic_arn, "TopicArn").map_err(ParseError::Invalid)?;
    match kind {
        sns::MessageType::SubscriptionConfirmation => {
            let url = sns::required(&envelope.subscribe_url, "SubscribeURL")
                .map_err(ParseError::Invalid)?;
            host::log_info(&format!("SNS subscription confirmation for topic {topic}"));
            host::sns_confirm_subscription(topic, url);
            Ok(Vec::new())
        }
        sns::MessageType::UnsubscribeConfirmation => {
            host::log_warn(&format!(
                "SNS unsubscribed this endpoint from topic {topic}: no further SES events arrive \
                 until it is subscribed again"
            ));
            Ok(Vec::new())
        }
        sns::MessageType::Notification => {
            let id =
                sns::required(&envelope.message_id, "MessageId").map_err(ParseError::Invalid)?;
            let id = limits::id("MessageId", id)?;
            let message =
                sns::required(&envelope.message, "Message").map_err(ParseError::Invalid)?;
            match ses::events(message, &request.body, id)? {
                ses::Outcome::Events(events) => Ok(events),
                ses::Outcome::Skipped(why) => {
                    host::log_info(&format!("skipping SNS message {id}: {why}"));
                    Ok(Vec::new())
                }
            }
        }
    }
}
