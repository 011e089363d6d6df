//! The overview page: the cluster, counts of topics and groups, total lag, the dead-letter
//! backlog and the gateway's own health: read ([`Overview`]), then rendered.

use axum::extract::{Extension, State};
use kafkit::Redrive;
use kafkit::admin::ClusterInfo;
use maud::{Markup, html};
use std::sync::Arc;

use super::frame::{Failure, PageResult};
use super::lag_history::{PAGE_WAIT, SAMPLE_EVERY};
use super::page::{Nav, page, unsupported_banner};
use super::session::Viewer;
use super::{BASE, Console};
use crate::AppState;

/// What the overview shows, read from the broker and the gateway.
struct Overview {
    cluster: ClusterInfo,
    /// Topics the viewer may read.
    topics: usize,
    /// Dead-letter topics the viewer may read, and the records in them.
    dead_letter_topics: usize,
    backlog: i64,
    /// Groups and their total lag; `None` on the embedded broker.
    groups: Option<(usize, i64)>,
    /// The brokers' status as readiness last saw it.
    brokers_status: String,
    producer_open: bool,
    queued: i64,
    draining: bool,
    embedded: bool,
}

async fn read_overview(
    state: &AppState,
    console: &Console,
    viewer: &Viewer,
) -> Result<Overview, Failure> {
    let cluster = state.admin().describe_cluster().await?;
    let readable = viewer.caller.clone();
    let topics = state
        .admin()
        .list_topics_where(move |name| readable.may_read(name))
        .await?;
    let dead_letters: Vec<_> = topics
        .iter()
        .filter(|t| Redrive::source_of(&t.name).is_some())
        .collect();
    let groups = if state.on_embedded_broker() {
        None
    } else {
        console
            .lag
            .refresh_within(state, SAMPLE_EVERY, PAGE_WAIT)
            .await;
        let groups = state.admin().list_groups().await?;
        let total: i64 = groups
            .iter()
            .filter_map(|g| console.lag.latest(&g.name, |t| viewer.caller.may_read(t)))
            .sum();
        Some((groups.len(), total))
    };
    let brokers_check = state.readiness().brokers(state).await;
    Ok(Overview {
        topics: topics.len(),
        dead_letter_topics: dead_letters.len(),
        backlog: dead_letters.iter().map(|t| t.record_count()).sum(),
        groups,
        brokers_status: brokers_check["status"]
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        producer_open: !state.producer().is_closed() && !state.single_producer().is_closed(),
        queued: state.queued(),
        draining: state.readiness().is_draining(),
        embedded: state.on_embedded_broker(),
        cluster,
    })
}

/// `GET /console`.
pub async fn overview_show(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
) -> PageResult {
    let overview = read_overview(&state, &console, &viewer).await?;
    Ok(page(
        &viewer,
        Nav::Overview,
        "Overview",
        render_overview(&overview),
    ))
}

fn render_overview(o: &Overview) -> Markup {
    html! {
        h1 { "Overview" }
        @if o.embedded {
            (unsupported_banner("The gateway runs on the embedded development broker (in memory, \
                not durable): consumer groups, topic configs and offset resets need a real \
                Kafka broker. Set KAFKA_BROKERS to use one."))
        }
        section.cards {
            div.card {
                h2 { "Cluster" }
                dl {
                    dt { "Cluster id" } dd #cluster-id { (o.cluster.cluster_id.as_deref().unwrap_or("unknown")) }
                    dt { "Controller" } dd { (o.cluster.controller_id.map_or("unknown".to_owned(), |c| c.to_string())) }
                    dt { "Brokers" } dd { (o.cluster.brokers.len()) }
                }
            }
            div.card {
                h2 { a href={(BASE) "/topics"} { "Topics" } }
                p.figure #topic-count { (o.topics) }
                p.note { "that you may read" }
            }
            div.card {
                h2 { a href={(BASE) "/groups"} { "Consumer groups" } }
                @match o.groups {
                    Some((count, lag)) => {
                        p.figure #group-count { (count) }
                        p.note { "total lag " strong #total-lag { (lag) } }
                    }
                    None => { p.note { "not available on this broker" } }
                }
            }
            div.card {
                h2 { a href={(BASE) "/dead-letters"} { "Dead letters" } }
                p.figure #dlt-backlog { (o.backlog) }
                p.note { "records in " (o.dead_letter_topics) " dead-letter topics" }
            }
            div.card {
                h2 { "Gateway" }
                dl {
                    dt { "Brokers" } dd { (o.brokers_status) }
                    dt { "Producer" } dd { (if o.producer_open { "open" } else { "closed" }) }
                    dt { "Queue depth" } dd { (o.queued) }
                    dt { "Draining" } dd { (if o.draining { "yes" } else { "no" }) }
                }
            }
        }
        section {
            h2 { "Brokers" }
            table {
                thead { tr { th { "Id" } th { "Host" } th { "Port" } th { "Role" } } }
                tbody {
                    @for broker in &o.cluster.brokers {
                        tr {
                            td.num { (broker.id) }
                            td { (broker.host) }
                            td.num { (broker.port) }
                            td { @if o.cluster.controller_id == Some(broker.id) { "controller" } }
                        }
                    }
                }
            }
        }
    }
}
