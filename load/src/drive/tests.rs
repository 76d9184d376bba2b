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

/// A stand-in server on 127.0.0.1: answers every request 201 with `answer(body)` over
/// keep-alive, and keeps each request's JSON body.
async fn serve(answer: fn(&Value) -> Value) -> (String, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let kept = bodies.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut socket = BufReader::new(socket);
                loop {
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    socket.read_exact(&mut body).await.unwrap();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let reply = answer(&body).to_string();
                    kept.lock().unwrap().push(body);
                    let response = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    socket
                        .get_mut()
                        .write_all(response.as_bytes())
                        .await
                        .unwrap();
                }
            });
        }
    });
    (address, bodies)
}

/// Holds the lines asked for at 100 a ticket, but totals an order of three lines one short.
fn priced(order: &Value) -> Value {
    let lines: Vec<Value> = order["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|line| {
            let quantity = line["quantity"].as_i64().unwrap();
            json!({
                "ticketTypeId": line["ticketTypeId"], "quantity": quantity,
                "unitPrice": 100, "amount": 100 * quantity,
            })
        })
        .collect();
    let quantity: i64 = lines.iter().map(|l| l["quantity"].as_i64().unwrap()).sum();
    let short = i64::from(lines.len() == 3);
    json!({
        "id": "a", "quantity": quantity, "currency": "EUR",
        "total": 100 * quantity - short, "lines": lines,
    })
}

#[tokio::test]
async fn orders_of_several_types_carry_lines_and_a_wrong_total_is_counted() {
    let (address, bodies) = serve(priced).await;
    let types: Vec<String> = ["A", "B", "C"].map(str::to_owned).into();
    let plan = Plan {
        clients: 4,
        requests: 300,
        quantities: vec![2],
        ticket_types: types.clone(),
        max_lines: 3,
        ..Plan::new(vec![address], "e".into())
    };
    let totals = drive(&plan, Arc::new(())).await.unwrap();
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 300);
    let mut three_lines = 0;
    for body in bodies.iter() {
        assert!(body.get("quantity").is_none(), "{body}");
        let lines = body["lines"].as_array().unwrap();
        let asked: std::collections::BTreeSet<&str> = lines
            .iter()
            .map(|l| l["ticketTypeId"].as_str().unwrap())
            .collect();
        assert!(
            (1..=3).contains(&lines.len()) && asked.len() == lines.len(),
            "{body}"
        );
        assert!(asked.iter().all(|t| types.iter().any(|k| k == t)), "{body}");
        assert!(lines.iter().all(|l| l["quantity"] == 2), "{body}");
        three_lines += u64::from(lines.len() == 3);
    }
    assert!(three_lines > 0 && three_lines < 300, "{three_lines}");
    assert_eq!(totals.mispriced, three_lines);
    assert_eq!(totals.mispriced_examples.len(), 5);
    assert!(
        totals.mispriced_examples[0].contains("is not the sum of the amounts"),
        "{:?}",
        totals.mispriced_examples
    );
    assert_eq!(totals.granted.len(), 300);
    let tickets: i64 = totals.granted.iter().map(|g| g.quantity).sum();
    let in_lines: i64 = totals
        .granted
        .iter()
        .flat_map(|g| &g.lines)
        .map(|l| l.quantity)
        .sum();
    assert_eq!(tickets, in_lines);
}

#[tokio::test]
async fn a_one_type_run_keeps_sending_the_quantity_body() {
    let (address, bodies) = serve(|order| json!({"id": "a", "quantity": order["quantity"]})).await;
    let plan = Plan {
        clients: 2,
        requests: 10,
        quantities: vec![3],
        ..Plan::new(vec![address], "e".into())
    };
    let totals = drive(&plan, Arc::new(())).await.unwrap();
    assert!(
        bodies
            .lock()
            .unwrap()
            .iter()
            .all(|b| *b == json!({"quantity": 3}))
    );
    assert_eq!((totals.granted.len(), totals.mispriced), (10, 0));
}
