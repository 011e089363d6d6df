//! Consumer-group pages: the list with state, members and lag (sortable by lag), and one
//! group with its members and assignments, committed offset and lag per partition (retry
//! topics marked with their tier and source, their lag summed as the retry backlog), the
//! lag-over-time chart (refreshed live by the console script) and the offset reset of an empty
//! group, which shows its plan and asks for a confirmation before it commits anything.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use kafkit::retry_topic;
use kafkit::{admin::GroupDescription, admin::ResetTo};
use maud::{Markup, html};
use serde::Deserialize;

use super::frame::{Failure, PageResult};
use super::lag_history::{PAGE_WAIT, SAMPLE_EVERY, chart};
use super::page::{Nav, csrf_field, page, parse_utc, segment, unsupported_banner};
use super::request::Asked;
use super::session::Viewer;
use super::{BASE, Console};
use crate::AppState;
use crate::api::groups::{GroupDetail, detail, list};

const NO_GROUP_API: &str = "The embedded development broker has no consumer-group API: \
     groups, lag and offset resets need a real Kafka broker (set KAFKA_BROKERS).";

/// The list's query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    sort: Option<String>,
}

/// `GET /console/groups`.
pub async fn groups_list(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> PageResult {
    if state.on_embedded_broker() {
        let body = html! { h1 { "Consumer groups" } (unsupported_banner(NO_GROUP_API)) };
        return Ok(page(&viewer, Nav::Groups, "Consumer groups", body));
    }
    console
        .lag
        .refresh_within(&state, SAMPLE_EVERY, PAGE_WAIT)
        .await;
    let groups = list(&state).await?;
    let mut rows: Vec<(kafkit::admin::GroupInfo, Option<i64>)> = groups
        .into_iter()
        .map(|g| {
            let lag = console.lag.latest(&g.name, |t| viewer.caller.may_read(t));
            (g, lag)
        })
        .collect();
    let by_lag = query.sort.as_deref() == Some("lag");
    if by_lag {
        rows.sort_by_key(|(_, lag)| std::cmp::Reverse(lag.unwrap_or(-1)));
    }
    let body = html! {
        h1 { "Consumer groups" }
        p.note { "Lag is sampled every " (SAMPLE_EVERY.as_secs()) " s, over the topics you may read." }
        table #groups {
            thead { tr {
                th { a href={(BASE) "/groups"} { "Group" } }
                th { "State" }
                th.num { "Members" }
                th.num { a href={(BASE) "/groups?sort=lag"} { "Lag" @if by_lag { " ▼" } } }
            } }
            tbody {
                @for (group, lag) in &rows {
                    tr {
                        td { a href={(BASE) "/groups/" (segment(&group.name))} { (group.name) } }
                        td { (group.state) }
                        td.num { (group.members) }
                        td.num { @if let Some(lag) = lag { (lag) } @else { "–" } }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::Groups, "Consumer groups", body))
}

/// The live part of a group page: lag per partition and the chart.
fn live(
    console: &Console,
    viewer: &Viewer,
    detail: &GroupDetail,
    description: Option<&GroupDescription>,
) -> Markup {
    let series = console
        .lag
        .series(&detail.group, |t| viewer.caller.may_read(t));
    // A retry topic's lag is what waits for its due time: the work a retry storm left behind.
    let retry_backlog: i64 = detail
        .partitions
        .iter()
        .filter(|p| retry_topic::source_of(&p.topic).is_some())
        .map(|p| p.lag)
        .sum();
    html! {
        @if let Some(d) = description {
            p {
                "State " strong #group-state { (d.state) }
                @if !d.protocol.is_empty() { ", protocol " (d.protocol) }
                ", " span #member-count { (d.members.len()) } " members."
            }
            @if !d.members.is_empty() {
                table #members {
                    thead { tr { th { "Client" } th { "Host" } th { "Member" } th { "Assignment" } } }
                    tbody {
                        @for m in &d.members {
                            tr {
                                td { (m.client_id) }
                                td { (m.host) }
                                td { code { (m.member_id) } }
                                td {
                                    @for (topic, partitions) in &m.assignment {
                                        div { (topic) ": " (partitions.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        p {
            "Total lag " strong #total-lag { (detail.total_lag) }
            @if retry_backlog > 0 || detail.partitions.iter().any(|p| retry_topic::source_of(&p.topic).is_some()) {
                ". Retry backlog " strong #retry-backlog { (retry_backlog) }
                " (records waiting on retry topics)"
            }
        }
        (chart(&series))
        table #lag {
            thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Committed" } th.num { "High watermark" } th.num { "Lag" } } }
            tbody {
                @for p in &detail.partitions {
                    tr {
                        td {
                            a href={(BASE) "/topics/" (p.topic)} { (p.topic) }
                            @if let Some((source, tier)) = retry_topic::source_of(&p.topic) {
                                " " span.badge { "retry tier " (tier.map_or("?".to_owned(), |n| n.to_string())) " of " (source) }
                            }
                        }
                        td.num { (p.partition) }
                        td.num { @if let Some(c) = p.committed { (c) } @else { "–" } }
                        td.num { (p.high_watermark) }
                        td.num.lag { (p.lag) }
                    }
                }
            }
        }
    }
}

/// The group's lag now, added to its history.
async fn sample(
    state: &AppState,
    console: &Console,
    viewer: &Viewer,
    group: &str,
) -> Result<GroupDetail, Failure> {
    if state.on_embedded_broker() {
        return Err(Failure::new(StatusCode::NOT_IMPLEMENTED, NO_GROUP_API));
    }
    let detail = detail(state, &viewer.caller, group.to_owned()).await?;
    // The history keeps every partition; pages filter by grants when they read it.
    if let Ok(all) = state.admin().group_lag(group, &[]).await {
        console.lag.record(group, &all);
    }
    Ok(detail)
}

/// The group's lag now (sampled into its history) and its description.
async fn read_group(
    asked: &Asked,
    group: &str,
) -> Result<(GroupDetail, Option<GroupDescription>), Failure> {
    let Asked {
        state,
        console,
        viewer,
    } = asked;
    let detail = sample(state, console, viewer, group).await?;
    let description = state.admin().describe_group(group).await?;
    Ok((detail, description))
}

/// `GET /console/groups/{group}`.
pub async fn groups_show(asked: Asked, Path(group): Path<String>) -> PageResult {
    let (detail, description) = read_group(&asked, &group).await?;
    let Asked {
        console, viewer, ..
    } = asked;
    let empty = description.as_ref().is_none_or(|d| d.members.is_empty());
    let mut topics: Vec<&str> = detail.partitions.iter().map(|p| p.topic.as_str()).collect();
    topics.dedup();
    let writable: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| viewer.caller.may_write(t))
        .collect();
    let body = html! {
        h1 { "Group " span.name { (group) } }
        section #live data-refresh={(BASE) "/groups/" (segment(&group)) "/live"} data-every="5000" {
            (live(&console, &viewer, &detail, description.as_ref()))
        }
        @if !writable.is_empty() {
            section #reset {
                h2 { "Reset offsets" }
                @if empty {
                    form.stack method="post" action={(BASE) "/groups/" (segment(&group)) "/reset"} {
                        (csrf_field(&viewer))
                        label { "Topic "
                            select name="topic" { @for t in &writable { option value=(t) { (t) } } }
                        }
                        label { "To "
                            select name="to" {
                                option value="earliest" { "earliest" }
                                option value="latest" { "latest" }
                                option value="timestamp" { "time (UTC)" }
                                option value="offset" { "offset" }
                            }
                        }
                        label { "Time or offset " input type="text" name="at" placeholder="2024-05-01T12:00 or 42"; }
                        button type="submit" { "Preview reset" }
                    }
                } @else {
                    p.note { "Offsets can be reset once the group is empty: stop its consumers first." }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::Groups, &group, body))
}

/// `GET /console/groups/{group}/live`: the live part alone, for the console script.
pub async fn groups_live(asked: Asked, Path(group): Path<String>) -> PageResult {
    let (detail, description) = read_group(&asked, &group).await?;
    let live = live(&asked.console, &asked.viewer, &detail, description.as_ref());
    Ok(Html(live.into_string()).into_response())
}

/// What the reset form posts: first without `confirm` (the plan is shown), then with it.
#[derive(Debug, Deserialize)]
pub struct ResetForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    topic: String,
    to: String,
    #[serde(default)]
    at: String,
    #[serde(default)]
    confirm: Option<String>,
}

impl ResetForm {
    fn target(&self) -> Result<ResetTo, Failure> {
        let at = self.at.trim();
        match self.to.as_str() {
            "earliest" => Ok(ResetTo::Earliest),
            "latest" => Ok(ResetTo::Latest),
            "timestamp" => parse_utc(at).map(ResetTo::Timestamp).ok_or_else(|| {
                Failure::bad_request("The time reads YYYY-MM-DDTHH:MM[:SS], in UTC.")
            }),
            "offset" => at
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .map(ResetTo::Offset)
                .ok_or_else(|| Failure::bad_request("The offset is a number, 0 or more.")),
            _ => Err(Failure::bad_request(
                "Reset to earliest, latest, a time or an offset.",
            )),
        }
    }
}

/// `POST /console/groups/{group}/reset`: shows the plan, or carries it out when confirmed.
pub async fn groups_reset(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(group): Path<String>,
    Form(form): Form<ResetForm>,
) -> PageResult {
    viewer.check_csrf(&form.csrf)?;
    if state.on_embedded_broker() {
        return Err(Failure::new(StatusCode::NOT_IMPLEMENTED, NO_GROUP_API));
    }
    kafkit::record::validate_topic(&form.topic)?;
    viewer.caller.require_read(&form.topic)?;
    viewer.require_write(&form.topic)?;
    let target = form.target()?;
    let members = state
        .admin()
        .describe_group(&group)
        .await?
        .map_or(0, |d| d.members.len());
    if members > 0 {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!(
                "Group {group} has {members} members: offsets can be reset only while it is empty."
            ),
        ));
    }
    let current = state.admin().group_lag(&group, &[&form.topic]).await?;
    let plan = state.admin().offsets_for(&form.topic, target).await?;
    let confirmed = form.confirm.as_deref() == Some("yes");
    if confirmed {
        state
            .admin()
            .commit_offsets(&group, &form.topic, &plan)
            .await?;
        tracing::info!(caller = viewer.caller.name(), %group, topic = %form.topic, "offsets reset from the console");
    }
    let group_href = format!("{BASE}/groups/{}", segment(&group));
    let body = html! {
        h1 { "Reset offsets of " span.name { (group) } }
        @if confirmed {
            p.banner.ok role="status" #reset-done { "Offsets of " (form.topic) " reset." }
        } @else {
            p.banner.warning role="status" { "Nothing changed yet: check the plan, then confirm." }
        }
        table #plan {
            thead { tr { th.num { "Partition" } th.num { "Committed before" } th.num { (if confirmed { "Committed now" } else { "Will commit" }) } } }
            tbody {
                @for (partition, offset) in &plan {
                    tr {
                        td.num { (partition) }
                        td.num { (current.iter().find(|c| c.partition == *partition).and_then(|c| c.committed).map_or("–".to_owned(), |c| c.to_string())) }
                        td.num { (offset) }
                    }
                }
            }
        }
        @if !confirmed {
            form.inline method="post" action={(group_href) "/reset"} {
                (csrf_field(&viewer))
                input type="hidden" name="topic" value=(form.topic);
                input type="hidden" name="to" value=(form.to);
                input type="hidden" name="at" value=(form.at);
                input type="hidden" name="confirm" value="yes";
                button.danger #confirm-reset type="submit" { "Confirm reset" }
            }
            " "
        }
        a href=(group_href) { "Back to the group" }
    };
    Ok(page(&viewer, Nav::Groups, "Reset offsets", body))
}
