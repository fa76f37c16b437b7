//! Load shedding for both servers: a bound on the requests being handled at once, over all
//! connections. A request over the bound is answered at once with `RESOURCE_EXHAUSTED` (plain
//! HTTP requests get `503` with `Retry-After`) instead of queueing without bound.
//!
//! tonic's own `load_shed` only acts per connection, behind `concurrency_limit_per_connection`;
//! many connections could still pile up work. This layer counts every request of the listener.
//! A permit is held until the handler returns its response headers (a streaming response then
//! runs on its own task).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

/// A tower layer that sheds requests beyond `limit` in flight. Clones share the same bound.
#[derive(Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    limit: usize,
    shed: Arc<AtomicU64>,
}

impl LoadShedLayer {
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            shed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Requests shed so far.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

impl<S> tower::Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] makes.
#[derive(Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for LoadShed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFut<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            let n = self.layer.shed.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    limit = self.layer.limit,
                    shed_total = n,
                    path = req.uri().path(),
                    "over capacity: request shed with RESOURCE_EXHAUSTED"
                );
            }
            return Box::pin(std::future::ready(Ok(overloaded(&req, self.layer.limit))));
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(permit);
            r
        })
    }
}

fn overloaded<B, RB: Default>(req: &http::Request<B>, limit: usize) -> http::Response<RB> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        tonic::Status::resource_exhausted(format!(
            "server over capacity ({limit} requests in flight); retry in a moment"
        ))
        .into_http()
    } else {
        let mut r = http::Response::new(RB::default());
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, Service, ServiceExt};

    #[tokio::test]
    async fn sheds_over_the_bound_and_recovers() {
        let layer = LoadShedLayer::new(1);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let inner = tower::service_fn(move |_req: http::Request<()>| {
            let rx = rx.clone();
            async move {
                if let Some(rx) = rx.lock().await.take() {
                    let _ = rx.await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(String::from("ok")))
            }
        });
        let mut svc = layer.layer(inner);
        let grpc = || {
            http::Request::builder()
                .header("content-type", "application/grpc")
                .body(())
                .unwrap()
        };
        let slow = svc.ready().await.unwrap().call(grpc());
        let slow = tokio::spawn(slow);
        tokio::task::yield_now().await;
        let shed = svc.ready().await.unwrap().call(grpc()).await.unwrap();
        assert_eq!(shed.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
        let plain = svc
            .ready()
            .await
            .unwrap()
            .call(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(plain.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(layer.shed_count(), 2);
        tx.send(()).unwrap();
        assert_eq!(slow.await.unwrap().unwrap().into_body(), "ok");
        let again = svc.ready().await.unwrap().call(grpc()).await.unwrap();
        assert_eq!(again.into_body(), "ok", "served again once below the bound");
    }
}
