//! Requests to the local apiserver, counted by method on the client's tower
//! stack (`offload_provider_kube_requests_total`): what an operator checks
//! to see that the load follows the changes, not the number of pods. The
//! counter is process-wide because the client is built (in `main`) before
//! the provider's metrics; every registry of the process shows it.

use std::sync::LazyLock;

use http::Request;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tower::util::MapRequestLayer;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The HTTP method, or `WATCH` for a `GET` with `watch=true`.
    pub method: String,
}

/// Requests by method.
pub type RequestCounter = Family<MethodLabels, Counter>;

static PROCESS: LazyLock<RequestCounter> = LazyLock::new(RequestCounter::default);

/// The process's counter of local apiserver requests.
pub fn process_counter() -> RequestCounter {
    PROCESS.clone()
}

/// The label of a request.
pub fn method_of<B>(req: &Request<B>) -> String {
    let watch = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    if watch {
        "WATCH".into()
    } else {
        req.method().as_str().into()
    }
}

/// A layer for `kube::client::ClientBuilder::with_layer` that counts every
/// request into `counter`.
pub fn layer<B>(
    counter: RequestCounter,
) -> MapRequestLayer<impl FnMut(Request<B>) -> Request<B> + Clone> {
    MapRequestLayer::new(move |req: Request<B>| {
        counter
            .get_or_create(&MethodLabels {
                method: method_of(&req),
            })
            .inc();
        req
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_told_apart_from_gets() {
        let get = Request::get("/api/v1/pods?fieldSelector=x")
            .body(())
            .expect("req");
        let watch = Request::get("/api/v1/pods?watch=true&resourceVersion=1")
            .body(())
            .expect("req");
        let patch = Request::patch("/api/v1/namespaces/a/pods/b/status")
            .body(())
            .expect("req");
        assert_eq!(method_of(&get), "GET");
        assert_eq!(method_of(&watch), "WATCH");
        assert_eq!(method_of(&patch), "PATCH");
    }
}
