//! `kind: Workspace`: optional settings of one workspace. Today that is the
//! soft-bounce suppression rule; a workspace without a document uses the
//! daemon's defaults (`--soft-bounce-threshold`, `--soft-bounce-window`).

use std::time::Duration;

use super::SourceLocation;
use super::check::Ctx;
use super::forwarder::duration;
use super::model::WorkspaceSpec;
use crate::store::SoftBouncePolicy;

/// Bounds of `soft_bounces.window`: a minute to a (Julian) year.
const WINDOW_BOUNDS: (Duration, Duration) =
    (Duration::from_secs(60), Duration::from_secs(31_557_600));

/// A validated, compiled workspace document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The workspace name.
    pub name: String,
    /// Its soft-bounce rule; `None`: the daemon's default.
    pub soft_bounces: Option<SoftBouncePolicy>,
    /// Where it was defined.
    pub source: SourceLocation,
}

/// Checks a workspace document and compiles it when it is clean.
pub(super) fn compile(
    ctx: &mut Ctx<'_>,
    spec: WorkspaceSpec,
    source: SourceLocation,
) -> Option<Workspace> {
    let soft_bounces = match &spec.soft_bounces {
        None => Some(None),
        Some(rule) => duration(
            ctx,
            "/soft_bounces/window",
            Some(&rule.window),
            Duration::ZERO,
            WINDOW_BOUNDS,
        )
        .map(|window| {
            Some(SoftBouncePolicy {
                threshold: rule.threshold.max(1),
                window,
            })
        }),
    };
    if ctx.has_errors() {
        return None;
    }
    Some(Workspace {
        name: spec.name,
        soft_bounces: soft_bounces?,
        source,
    })
}
