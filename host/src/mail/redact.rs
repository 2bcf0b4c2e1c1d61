//! The one redactor for SMTP output: every string that can carry server
//! text or user input (trace lines, stage details, classifications, reports)
//! passes through a [`Redactor`] built from the target's credentials before
//! it reaches a log, the CLI, the admin API or the stored last outcome.
//!
//! A server may echo what the client sent (some do in their 535 reply), and
//! what the client sent in AUTH is the password in one of several encodings,
//! so the redactor removes every form mailplug itself could have written and
//! the ones a server plausibly prints back: the plain value, base64 (with and
//! without padding, standard and URL-safe alphabets), the AUTH PLAIN blob
//! `\0user\0pass` and its base64, the AUTH LOGIN username, percent-encoded
//! forms, and the part of the password's base64 that survives inside a
//! larger base64 blob at each of the three byte alignments.

use std::borrow::Cow;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::classify::Classification;
use super::target::SmtpTarget;

/// What replaces a secret.
pub const MARKER: &str = "<redacted>";

/// Base64 fragments shorter than this are not searched for: they carry at
/// most two bytes of the password, and matching them would blank out
/// ordinary words in server text.
const MIN_FRAGMENT: usize = 4;

/// RFC 3986 unreserved characters stay as they are (what
/// `encodeURIComponent`-style encoders and most URL libraries produce).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Removes a target's credentials, in every encoding listed in the module
/// documentation, from text. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    /// `None` when the target has no credentials: nothing to remove.
    patterns: Option<Arc<AhoCorasick>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The patterns are the secret; never print them.
        f.debug_struct("Redactor")
            .field("active", &self.patterns.is_some())
            .finish()
    }
}

impl Redactor {
    /// A redactor for `username` / `password` (either may be absent). The
    /// plain username is left alone (servers name the login in ordinary
    /// replies, and it is not a secret); its base64 is removed, since AUTH
    /// LOGIN puts it on the wire next to the password's.
    pub fn new(username: Option<&str>, password: Option<&str>) -> Self {
        Redactor::from_forms(credential_forms(username, password), password)
    }

    /// A redactor removing `forms`; `password` is what is still removed if
    /// the automaton cannot be built.
    fn from_forms(mut forms: Vec<String>, password: Option<&str>) -> Self {
        forms.retain(|f| !f.is_empty());
        forms.sort();
        forms.dedup();
        if forms.is_empty() {
            return Redactor::default();
        }
        match AhoCorasick::new(&forms) {
            Ok(ac) => Redactor {
                patterns: Some(Arc::new(ac)),
            },
            // Only a pattern set beyond the automaton's size limits fails,
            // which these few short strings cannot reach. Failing closed
            // would hide every reply; the plain password is still removed.
            Err(err) => {
                tracing::error!("cannot build the SMTP redactor: {err}");
                Redactor::plain_only(password)
            }
        }
    }

    fn plain_only(password: Option<&str>) -> Self {
        let patterns = password
            .filter(|p| !p.is_empty())
            .and_then(|p| AhoCorasick::new([p]).ok())
            .map(Arc::new);
        Redactor { patterns }
    }

    /// The redactor for a target's credentials; a user name read from a
    /// secret is removed in every form, like the password.
    pub fn for_target(target: &SmtpTarget) -> Self {
        let password = target.password.as_ref().map(|p| p.expose());
        let username = target.username.as_deref();
        match username {
            Some(user) if target.username_is_secret => {
                Redactor::with_secret_username(user, password)
            }
            _ => Redactor::new(username, password),
        }
    }

    /// [`Redactor::new`] for a user name that is itself a secret.
    fn with_secret_username(username: &str, password: Option<&str>) -> Self {
        let mut forms = credential_forms(Some(username), password);
        forms.extend(password_forms(username));
        Redactor::from_forms(forms, password)
    }

    /// `text` with every occurrence of every form replaced by [`MARKER`].
    /// Overlapping occurrences are merged, so no part of a form survives
    /// next to a marker.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(ac) = &self.patterns else {
            return Cow::Borrowed(text);
        };
        let Ok(matches) = ac.try_find_overlapping_iter(text) else {
            // Only an automaton built for leftmost matching refuses, and
            // `new` builds the standard kind; should that ever change, hide
            // the text rather than print a secret.
            return Cow::Borrowed(MARKER);
        };
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for m in matches {
            match spans.last_mut() {
                // Matches come in order of their end; a later match may start
                // earlier than the previous one, so merge backwards.
                Some(last) if m.start() <= last.1 => {
                    last.0 = last.0.min(m.start());
                    last.1 = last.1.max(m.end());
                    while spans.len() >= 2 {
                        let (s, e) = spans[spans.len() - 1];
                        let prev = spans.len() - 2;
                        if s <= spans[prev].1 {
                            spans[prev].0 = spans[prev].0.min(s);
                            spans[prev].1 = spans[prev].1.max(e);
                            spans.pop();
                        } else {
                            break;
                        }
                    }
                }
                _ => spans.push((m.start(), m.end())),
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in spans {
            // Patterns are valid UTF-8 and so is the text: every match starts
            // and ends on a character boundary.
            out.push_str(text.get(at..start).unwrap_or(""));
            out.push_str(MARKER);
            at = end;
        }
        out.push_str(text.get(at..).unwrap_or(""));
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] into an owned string.
    pub fn string(&self, text: String) -> String {
        let clean = match self.redact(&text) {
            Cow::Borrowed(_) => None,
            Cow::Owned(clean) => Some(clean),
        };
        clean.unwrap_or(text)
    }

    /// Every text field of a classification (server text and hint).
    pub fn classification(&self, mut c: Classification) -> Classification {
        c.server_text = c.server_text.map(|t| self.string(t));
        c.hint = self.string(c.hint);
        c
    }

    /// Every string in a list (e.g. warnings).
    pub fn strings(&self, list: Vec<String>) -> Vec<String> {
        list.into_iter().map(|s| self.string(s)).collect()
    }
}

/// The password's own forms: plain, base64 whole and at each alignment
/// inside a larger blob, percent-encoded.
/// Every form of the credentials mailplug could have written (module docs).
fn credential_forms(username: Option<&str>, password: Option<&str>) -> Vec<String> {
    let mut forms = Vec::new();
    if let Some(pass) = password.filter(|p| !p.is_empty()) {
        forms.extend(password_forms(pass));
        let user = username.unwrap_or("");
        let blob = format!("\0{user}\0{pass}");
        forms.extend(base64_forms(blob.as_bytes()));
        // Some servers print the decoded blob with the NULs shown.
        forms.push(format!("\\0{user}\\0{pass}"));
        forms.push(format!("\\x00{user}\\x00{pass}"));
    }
    if let Some(user) = username.filter(|u| !u.is_empty()) {
        forms.extend(base64_forms(user.as_bytes()));
    }
    forms
}

fn password_forms(pass: &str) -> Vec<String> {
    let mut forms = vec![pass.to_owned()];
    forms.extend(base64_forms(pass.as_bytes()));
    for align in 0..3 {
        for fragment in aligned_fragments(pass.as_bytes(), align) {
            if fragment.len() >= MIN_FRAGMENT {
                forms.push(fragment);
            }
        }
    }
    for set in [NON_ALPHANUMERIC, URI_COMPONENT] {
        let upper = utf8_percent_encode(pass, set).to_string();
        let lower = lower_hex_escapes(&upper);
        // Form encoding writes a space as `+`.
        forms.push(upper.replace("%20", "+"));
        forms.push(lower.replace("%20", "+"));
        forms.push(upper);
        forms.push(lower);
    }
    forms
}

/// base64 of `bytes`: standard and URL-safe alphabets, padded and not.
fn base64_forms(bytes: &[u8]) -> Vec<String> {
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .map(|engine| engine.encode(bytes))
        .collect()
}

/// The base64 characters determined by `secret` alone when it starts
/// `align` bytes (0, 1 or 2) into a 3-byte group of a larger blob: the
/// characters whose six bits all come from the secret. Both alphabets.
fn aligned_fragments(secret: &[u8], align: usize) -> Vec<String> {
    let mut padded = vec![0u8; align];
    padded.extend_from_slice(secret);
    let first_bit = 8 * align;
    let end_bit = first_bit + 8 * secret.len();
    let start = first_bit.div_ceil(6);
    let end = end_bit / 6;
    if end <= start {
        return Vec::new();
    }
    [STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .filter_map(|engine| engine.encode(&padded).get(start..end).map(str::to_owned))
        .collect()
}

/// `%2f` for `%2F`: some encoders write lower-case hex.
fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut hex_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USER: &str = "tester";
    const PASS: &str = "Pw-9f3a-NEVER-LOG-ME";

    fn redactor() -> Redactor {
        Redactor::new(Some(USER), Some(PASS))
    }

    /// The pieces of redacted text between markers: what a reader sees.
    fn visible(text: &str) -> Vec<&str> {
        text.split(MARKER).collect()
    }

    fn listed_forms(user: &str, pass: &str) -> Vec<String> {
        let mut forms = vec![
            pass.to_owned(),
            STANDARD.encode(pass),
            STANDARD_NO_PAD.encode(pass),
            URL_SAFE.encode(pass),
            STANDARD.encode(format!("\0{user}\0{pass}")),
            STANDARD_NO_PAD.encode(format!("\0{user}\0{pass}")),
            utf8_percent_encode(pass, NON_ALPHANUMERIC).to_string(),
            utf8_percent_encode(pass, URI_COMPONENT).to_string(),
        ];
        if !user.is_empty() {
            forms.push(STANDARD.encode(user));
        }
        forms
    }

    #[test]
    fn echoed_plain_and_base64_credentials_are_removed() {
        let plain_blob = STANDARD.encode(format!("\0{USER}\0{PASS}"));
        let text = format!(
            "5.7.8 you sent PLAIN {plain_blob} = b'\\x00{USER}\\x00{PASS}', LOGIN {} / {}",
            STANDARD.encode(USER),
            STANDARD.encode(PASS)
        );
        let clean = redactor().redact(&text).into_owned();
        assert!(!clean.contains(PASS), "{clean}");
        assert!(!clean.contains(&plain_blob), "{clean}");
        assert!(!clean.contains(&STANDARD.encode(PASS)), "{clean}");
        assert!(!clean.contains(&STANDARD.encode(USER)), "{clean}");
        assert!(
            clean.starts_with("5.7.8 you sent PLAIN <redacted>"),
            "{clean}"
        );
    }

    #[test]
    fn a_user_name_read_from_a_secret_is_removed_like_the_password() {
        let mut target = crate::mail::target::tests::sample();
        target.username = Some("key-id-7Qx2".into());
        target.password = Some(crate::config::Secret::new(PASS));
        let text = "535 5.7.8 bad login for key-id-7Qx2";
        // A plain user name stays: servers name the login in replies.
        assert_eq!(Redactor::for_target(&target).redact(text), text);
        target.username_is_secret = true;
        let r = Redactor::for_target(&target);
        assert_eq!(r.redact(text), "535 5.7.8 bad login for <redacted>");
        assert_eq!(r.redact(&format!("p {PASS}")), "p <redacted>");
        // The same secret as user and password (Postmark's token).
        target.username = Some(PASS.into());
        let r = Redactor::for_target(&target);
        assert_eq!(r.redact(&format!("u {PASS}")), "u <redacted>");
    }

    #[test]
    fn url_encoded_password_is_removed_in_either_hex_case() {
        let r = Redactor::new(None, Some("a b/c?d"));
        assert_eq!(r.redact("u=a%20b%2Fc%3Fd&x"), "u=<redacted>&x");
        assert_eq!(r.redact("u=a+b%2fc%3fd&x"), "u=<redacted>&x");
    }

    #[test]
    fn text_without_credentials_is_returned_unchanged() {
        let text = "535 5.7.8 Authentication credentials invalid for tester";
        assert!(matches!(redactor().redact(text), Cow::Borrowed(t) if t == text));
        assert!(matches!(
            Redactor::new(None, None).redact(PASS),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn overlapping_forms_become_one_marker() {
        let r = Redactor::new(None, Some("abab"));
        assert_eq!(r.redact("xabababx"), "x<redacted>x");
    }

    #[test]
    fn debug_does_not_print_the_patterns() {
        let text = format!("{:?}", redactor());
        assert!(!text.contains(PASS), "{text}");
    }

    /// Any string, printable or not (control characters, NUL, non-ASCII).
    fn any_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_listed_form_inserted_into_any_text_is_removed(
            user in any_text(),
            pass in any_text().prop_filter("a password", |p| !p.is_empty()),
            before in any_text(),
            after in any_text(),
            which in 0usize..10,
        ) {
            let r = Redactor::new(Some(&user), Some(&pass));
            let forms = listed_forms(&user, &pass);
            let form = &forms[which % forms.len()];
            let text = format!("{before}{form}{after}");
            let clean = r.redact(&text);
            for piece in visible(&clean) {
                for f in &forms {
                    prop_assert!(!piece.contains(f.as_str()), "{f:?} survives in {clean:?}");
                }
            }
        }

        #[test]
        fn the_password_part_of_any_base64_blob_is_removed(
            pass in any_text().prop_filter("a password of 3+ bytes", |p| p.len() >= 3),
            prefix in proptest::collection::vec(any::<u8>(), 0..6),
            suffix in proptest::collection::vec(any::<u8>(), 0..6),
            url_safe in any::<bool>(),
        ) {
            let r = Redactor::new(None, Some(&pass));
            let mut blob = prefix.clone();
            blob.extend_from_slice(pass.as_bytes());
            blob.extend_from_slice(&suffix);
            let engine = if url_safe { URL_SAFE } else { STANDARD };
            let encoded = engine.encode(&blob);
            // The characters whose bits all come from the password, computed
            // from the blob itself rather than by the redactor's own helper.
            let start = (8 * prefix.len()).div_ceil(6);
            let end = 8 * (prefix.len() + pass.len()) / 6;
            let core = &encoded[start..end];
            prop_assume!(core.len() >= MIN_FRAGMENT);
            let text = format!("535 got {encoded} from you");
            let clean = r.redact(&text);
            for piece in visible(&clean) {
                prop_assert!(!piece.contains(core), "{core:?} survives in {clean:?}");
            }
        }
    }
}
