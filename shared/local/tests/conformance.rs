//! The port conformance suite of vacal-core against the SQLite and file adapters.

use std::sync::{Arc, Mutex};

use vacal_core::conformance::{self, Adapters};

/// Fresh adapters in a new temp dir per call; the dirs live as long as `dirs`.
fn factory(
    dirs: &Arc<Mutex<Vec<tempfile::TempDir>>>,
) -> impl FnMut() -> std::future::Ready<Adapters> + '_ {
    move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let (store, results) = vacal_local::open(dir.path()).expect("open");
        dirs.lock().unwrap().push(dir);
        let store = Arc::new(store);
        std::future::ready(Adapters {
            jobs: store.clone(),
            queue: store,
            results: Arc::new(results),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_and_files_pass_the_conformance_suite() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    let started = std::time::Instant::now();
    conformance::run_all(factory(&dirs)).await;
    eprintln!("conformance suite: {:?}", started.elapsed());
}

#[tokio::test(flavor = "current_thread")]
async fn the_suite_also_passes_on_a_current_thread_runtime() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    conformance::run_all(factory(&dirs)).await;
}

/// The lenient queue mode (for cloud queues) must pass on a strict queue too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lenient_queue_checks_pass_too() {
    let dirs = Arc::new(Mutex::new(Vec::new()));
    let config = conformance::SuiteConfig {
        strict_queue: false,
        ..Default::default()
    };
    let mut make = factory(&dirs);
    conformance::queue_suite(&config, || {
        let adapters = make();
        async move { adapters.await.queue }
    })
    .await;
}
