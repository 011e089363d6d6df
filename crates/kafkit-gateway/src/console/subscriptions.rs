//! The push subscriptions pages: the list (state, endpoint, concurrency, in flight, lag,
//! counters), and one subscription (its endpoint's state, requests and records in flight, lag
//! by partition and over time, the recent failures with status and excerpt, its dead-letter
//! topics). A key sees the subscriptions whose topics it may all read, as in
//! `GET /subscriptions`.
//!
//! The lag chart is the consumer-group page's: the subscription's group in the console's
//! [`LagHistory`](super::LagHistory), sampled on each visit and by the background sampler,
//! its section refreshed live by the console script.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use kafkit::DeadLetter;
use maud::{Markup, html};

use super::frame::{Failure, PageResult};
use super::lag_history::chart;
use super::page::{Nav, page, segment, utc};
use super::request::Asked;
use super::session::Viewer;
use super::{BASE, Console};
use crate::AppState;
use crate::push::SubscriptionView;

/// The subscriptions `viewer` may see.
fn visible(state: &AppState, viewer: &Viewer) -> Vec<SubscriptionView> {
    state
        .push()
        .as_ref()
        .map(|p| p.views())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| v.topics.iter().all(|t| viewer.caller.may_read(t)))
        .collect()
}

/// `GET /console/subscriptions`.
pub async fn subscriptions_list(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let subscriptions = visible(&state, &viewer);
    let body = html! {
        h1 { "Push subscriptions" }
        @if subscriptions.is_empty() {
            p.note { "This process runs no push subscription (kafkit serve --subscriptions FILE)." }
        } @else {
            table #subscriptions {
                thead { tr {
                    th { "Name" } th { "State" } th { "Endpoint" } th { "Topics" }
                    th.num { "Limit" } th.num { "In flight" } th.num { "Lag" }
                    th.num { "Delivered" } th.num { "Failed" }
                } }
                tbody {
                    @for s in &subscriptions {
                        tr {
                            td { a href={(BASE) "/subscriptions/" (segment(&s.name))} { (s.name) } }
                            td { span.badge { (s.status) } }
                            td { (s.endpoint) }
                            td { (s.topics.join(", ")) }
                            td.num { (s.concurrency.limit) }
                            td.num { (s.concurrency.in_flight) }
                            td.num { (s.consumer.lag) }
                            td.num { (s.deliveries.delivered) }
                            td.num { (s.deliveries.failed) }
                        }
                    }
                }
            }
        }
    };
    Ok(page(
        &viewer,
        Nav::Subscriptions,
        "Push subscriptions",
        body,
    ))
}

/// The subscription `name`, if `viewer` may see it.
fn find(state: &AppState, viewer: &Viewer, name: &str) -> Result<SubscriptionView, Failure> {
    visible(state, viewer)
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Failure::new(
                StatusCode::NOT_FOUND,
                format!("no push subscription {name:?} that you may see"),
            )
        })
}

/// Adds the subscription's group lag now to the console's lag history (not on the embedded
/// development broker, which has no group API).
async fn sample(state: &AppState, console: &Console, s: &SubscriptionView) {
    if state.on_embedded_broker() {
        return;
    }
    if let Ok(all) = state.admin().group_lag(&s.group, &[]).await {
        console.lag.record(&s.group, &all);
    }
}

/// `GET /console/subscriptions/{name}`.
pub async fn subscriptions_show(asked: Asked, Path(name): Path<String>) -> PageResult {
    let s = read_subscription(&asked, &name).await?;
    let title = format!("Push subscription {}", s.name);
    let lag = lag_over_time(&asked.console, &asked.viewer, &s);
    Ok(page(
        &asked.viewer,
        Nav::Subscriptions,
        &title,
        render_subscription(&s, lag),
    ))
}

/// `GET /console/subscriptions/{name}/live`: the lag section alone, for the console script.
pub async fn subscriptions_live(asked: Asked, Path(name): Path<String>) -> PageResult {
    let s = read_subscription(&asked, &name).await?;
    Ok(Html(lag_over_time(&asked.console, &asked.viewer, &s).into_string()).into_response())
}

/// The subscription `name` as `asked`'s viewer may see it, its lag sampled into its history.
async fn read_subscription(asked: &Asked, name: &str) -> Result<SubscriptionView, Failure> {
    let s = find(&asked.state, &asked.viewer, name)?;
    sample(&asked.state, &asked.console, &s).await;
    Ok(s)
}

/// The subscription's lag now and its group's lag chart, over the topics `viewer` may read.
fn lag_over_time(console: &Console, viewer: &Viewer, s: &SubscriptionView) -> Markup {
    let series = console.lag.series(&s.group, |t| viewer.caller.may_read(t));
    html! {
        p { "Lag " strong #lag-now { (s.consumer.lag) } " records behind." }
        (chart(&series))
    }
}

/// One subscription's page: endpoint and state, what is in flight, lag, the last failures.
fn render_subscription(s: &SubscriptionView, lag: Markup) -> Markup {
    let template = DeadLetter::template(&s.dead_letter);
    let d = &s.deliveries;
    html! {
        h1 { "Push subscription " (s.name) }
        section.cards {
            div.card {
                h2 { "Endpoint" }
                dl {
                    dt { "URL" } dd #endpoint { (s.endpoint) }
                    dt { "State" } dd #state { (s.status) }
                    dt { "Failures in a row" } dd #consecutive-failures { (d.consecutive_failures) }
                    dt { "Last success" } dd { @match d.last_success_ago_ms {
                        Some(ms) => { (ms / 1000) " s ago" }
                        None => { "never" }
                    } }
                    @for problem in &s.problems { dt { "Problem" } dd.problem { (problem) } }
                }
            }
            div.card {
                h2 { "In flight" }
                dl {
                    dt { "Requests" } dd #requests-in-flight { (s.concurrency.in_flight) }
                    dt { "Limit" } dd #limit { (s.concurrency.limit) " of " (s.concurrency.max) " (" (serde_json::to_value(s.concurrency.mode).unwrap_or_default().as_str().unwrap_or_default()) ")" }
                    dt { "Records" } dd #records-in-flight { (s.consumer.in_flight) }
                }
            }
            div.card {
                h2 { "Deliveries" }
                dl {
                    dt { "Delivered" } dd #delivered { (d.delivered) }
                    dt { "Failed requests" } dd #failed { (d.failed) }
                    dt { "Lag" } dd #lag { (s.consumer.lag) }
                }
            }
            div.card {
                h2 { "Consumer" }
                dl {
                    dt { "Group" } dd { a href={(BASE) "/groups/" (segment(&s.group))} { (s.group) } }
                    dt { "Order" } dd { (serde_json::to_value(s.order).unwrap_or_default().as_str().unwrap_or_default()) }
                    dt { "Max in flight" } dd { (s.max_in_flight) " per partition" }
                    dt { "Timeout" } dd { (s.timeout_ms) " ms" }
                    dt { "Attempts" } dd { (s.max_attempts) }
                }
            }
        }
        section {
            h2 { "Lag over time" }
            div #lag-history data-refresh={(BASE) "/subscriptions/" (segment(&s.name)) "/live"} data-every="5000" {
                (lag)
            }
        }
        section {
            h2 { "Dead-letter topics" }
            ul #dead-letter-topics {
                @for topic in &s.topics {
                    @let dlt = template.topic_for(topic);
                    li { (topic) " → " a href={(BASE) "/dead-letters/" (segment(&dlt))} { (dlt) } }
                }
            }
        }
        section {
            h2 { "Partitions" }
            table #partitions {
                thead { tr { th { "Topic" } th.num { "Partition" } th.num { "Queued" } th.num { "In flight" } th.num { "Lag" } th { "Paused" } } }
                tbody {
                    @for p in &s.consumer.partitions {
                        tr {
                            td {
                                (p.topic)
                                @if let Some((_, Some(tier))) = kafkit::retry_topic::source_of(&p.topic) {
                                    " " span.badge { "retry tier " (tier) }
                                }
                            }
                            td.num { (p.partition) } td.num { (p.queued) } td.num { (p.in_flight) }
                            td.num { (p.lag.map_or("-".to_owned(), |l| l.to_string())) }
                            td { (p.paused.join(", ")) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Recent failures" }
            @if d.recent_failures.is_empty() {
                p.note #no-failures { "None." }
            } @else {
                table #recent-failures {
                    thead { tr { th { "At (UTC)" } th { "Delivery id" } th.num { "Attempt" } th { "Class" } th { "Status and excerpt" } } }
                    tbody {
                        @for f in d.recent_failures.iter().rev() {
                            tr {
                                td { (utc(f.at_unix_ms as i64)) }
                                td { (f.delivery_id) }
                                td.num { (f.attempt) }
                                td { (f.class) }
                                td { code { (f.message) } }
                            }
                        }
                    }
                }
            }
        }
    }
}
