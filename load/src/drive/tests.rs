use std::sync::Mutex;

use super::*;

/// Counts what it sees and stops the whole run at the first request with no answer.
#[derive(Default)]
struct StopAtFirstFailure {
    sent: AtomicU64,
    seen: Mutex<Vec<Outcome>>,
}

impl Observer for StopAtFirstFailure {
    fn sending(&self, _: Action, _: usize, _: &str) {
        self.sent.fetch_add(1, Ordering::SeqCst);
    }

    fn observe(&self, outcome: &Outcome) -> ControlFlow<Stop> {
        self.seen.lock().unwrap().push(outcome.clone());
        if outcome.answered() {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(Stop::Run)
        }
    }
}

#[tokio::test]
async fn an_observer_sees_every_request_and_can_stop_the_run() {
    // Nothing listens on port 1: every request goes unanswered.
    let plan = Plan {
        clients: 4,
        requests: 1_000,
        quantities: vec![1, 2],
        rotate_instances: true,
        requests_per_buyer: 2,
        ..Plan::new(
            vec!["http://127.0.0.1:1".into(), "http://127.0.0.2:1".into()],
            "00000000-0000-0000-0000-000000000000".into(),
        )
    };
    let observer = Arc::new(StopAtFirstFailure::default());
    let totals = drive(&plan, observer.clone()).await.unwrap();
    let seen = observer.seen.lock().unwrap();
    // Each client sends at most one request before it sees the stop.
    assert!(!seen.is_empty() && seen.len() <= 4, "{}", seen.len());
    assert_eq!(observer.sent.load(Ordering::SeqCst), seen.len() as u64);
    assert_eq!(totals.transport_errors, seen.len() as u64);
    assert!(totals.statuses.is_empty() && totals.granted.is_empty());
    for outcome in seen.iter() {
        assert_eq!(outcome.action, Action::Purchase);
        assert!(!outcome.answered());
        assert_eq!(
            outcome.instance,
            (outcome.client + outcome.request as usize) % 2
        );
        assert_eq!(outcome.quantity, [1, 2][outcome.request as usize % 2]);
        assert_eq!(outcome.buyer, format!("load-{}", outcome.request / 2));
    }
}
