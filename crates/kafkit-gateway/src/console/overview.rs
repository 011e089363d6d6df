//! The overview page: the cluster, counts of topics and groups, total lag, the dead-letter
//! backlog and the gateway's own health.

use axum::extract::{Extension, State};
use kafkit::Redrive;
use maud::html;
use std::sync::Arc;

use super::frame::PageResult;
use super::lag_history::{PAGE_WAIT, SAMPLE_EVERY};
use super::page::{Nav, page, unsupported_banner};
use super::session::Viewer;
use super::{BASE, Console};
use crate::AppState;

/// `GET /console`.
pub async fn overview_show(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    viewer: Viewer,
) -> PageResult {
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
    let backlog: i64 = dead_letters.iter().map(|t| t.record_count()).sum();
    let groups = if state.on_embedded_broker() {
        None
    } else {
        console
            .lag
            .refresh_within(&state, SAMPLE_EVERY, PAGE_WAIT)
            .await;
        let groups = state.admin().list_groups().await?;
        let total: i64 = groups
            .iter()
            .filter_map(|g| console.lag.latest(&g.name, |t| viewer.caller.may_read(t)))
            .sum();
        Some((groups.len(), total))
    };
    let brokers_check = state.readiness().brokers(&state).await;
    let producer_open = !state.producer().is_closed() && !state.single_producer().is_closed();
    let body = html! {
        h1 { "Overview" }
        @if state.on_embedded_broker() {
            (unsupported_banner("The gateway runs on the embedded development broker (in memory, \
                not durable): consumer groups, topic configs and offset resets need a real \
                Kafka broker. Set KAFKA_BROKERS to use one."))
        }
        section.cards {
            div.card {
                h2 { "Cluster" }
                dl {
                    dt { "Cluster id" } dd #cluster-id { (cluster.cluster_id.as_deref().unwrap_or("unknown")) }
                    dt { "Controller" } dd { (cluster.controller_id.map_or("unknown".to_owned(), |c| c.to_string())) }
                    dt { "Brokers" } dd { (cluster.brokers.len()) }
                }
            }
            div.card {
                h2 { a href={(BASE) "/topics"} { "Topics" } }
                p.figure #topic-count { (topics.len()) }
                p.note { "that you may read" }
            }
            div.card {
                h2 { a href={(BASE) "/groups"} { "Consumer groups" } }
                @match groups {
                    Some((count, lag)) => {
                        p.figure #group-count { (count) }
                        p.note { "total lag " strong #total-lag { (lag) } }
                    }
                    None => { p.note { "not available on this broker" } }
                }
            }
            div.card {
                h2 { a href={(BASE) "/dead-letters"} { "Dead letters" } }
                p.figure #dlt-backlog { (backlog) }
                p.note { "records in " (dead_letters.len()) " dead-letter topics" }
            }
            div.card {
                h2 { "Gateway" }
                dl {
                    dt { "Brokers" } dd { (brokers_check["status"].as_str().unwrap_or("unknown")) }
                    dt { "Producer" } dd { (if producer_open { "open" } else { "closed" }) }
                    dt { "Queue depth" } dd { (state.queued()) }
                    dt { "Draining" } dd { (if state.readiness().is_draining() { "yes" } else { "no" }) }
                }
            }
        }
        section {
            h2 { "Brokers" }
            table {
                thead { tr { th { "Id" } th { "Host" } th { "Port" } th { "Role" } } }
                tbody {
                    @for broker in &cluster.brokers {
                        tr {
                            td.num { (broker.id) }
                            td { (broker.host) }
                            td.num { (broker.port) }
                            td { @if cluster.controller_id == Some(broker.id) { "controller" } }
                        }
                    }
                }
            }
        }
    };
    Ok(page(&viewer, Nav::Overview, "Overview", body))
}
