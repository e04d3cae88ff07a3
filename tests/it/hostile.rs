//! A hostile-input run: 200 messages from a generator of malformed and adversarial requests,
//! mixed with good ones. The worker stays up, every good job succeeds, every bad one gets a
//! clear `failed` result (or a dead letter).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::helpers::{Bus, assert_schema, collect};

/// A good request: sometimes with inline facts whose names are full of Typst markup.
fn good(i: usize) -> serde_json::Value {
    let markup = [
        "#read(\"/etc/passwd\")",
        "] #panic(\"x\") [",
        "$x$ \\ @ref <l> // c",
        "*b* _e_ `r` = h",
    ];
    if i.is_multiple_of(2) {
        let region = ["Jilin", "230000", "黑龙江省", "beijing"][(i / 2) % 4];
        let period = ["2019", "2019-H1", "2020", "2018"][(i / 2) % 4];
        return json!({"region": region, "period": period});
    }
    let name = markup[i % markup.len()];
    json!({"region": "Jilin", "period": "2021", "language": if i.is_multiple_of(3) { "zh" } else { "en" }, "facts": [
        {"region": "Jilin", "period": "2021", "flow": "total", "value": 5000, "currency": "USD"},
        {"region": "Jilin", "period": "2020", "flow": "total", "value": 4000, "currency": "USD"},
        {"region": "Jilin", "period": "2021", "partner": name, "flow": "total", "value": 1000, "currency": "USD"},
        {"region": "Jilin", "period": "2021", "product": name, "flow": "exports", "value": 700, "currency": "USD"},
    ]})
}

/// A bad request body, of one of many kinds.
fn bad(i: usize) -> Vec<u8> {
    let kind = i % 16;
    let text = match kind {
        0 => r#"{"region":"Jilin","period":"2019""#.to_string(),
        1 => r#"{"region":["Jilin"],"period":"2019"}"#.to_string(),
        2 => r#"{"region":"","period":"2019"}"#.to_string(),
        3 => format!(r#"{{"region":"{}","period":"2019"}}"#, "J".repeat(100_000)),
        4 => format!("{}1{}", "{\"a\":".repeat(300), "}".repeat(300)),
        5 => return b"{\"region\":\"\xc3\x28\",\"period\":\"2019\"}".to_vec(),
        6 => r##"{"region":"#panic(\"boom\")","period":"#read(\"/etc/passwd\")"}"##.to_string(),
        7 => r#"{"region":"Jilin","period":"2019-00"}"#.to_string(),
        8 => r#"{"region":"Jilin","period":"2019-Q9"}"#.to_string(),
        9 => r#"{"region":"Jilin","period":"1066"}"#.to_string(),
        10 => r#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":-7,"currency":"USD"}]}"#.to_string(),
        11 => r#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":1e300,"currency":"USD"}]}"#.to_string(),
        12 => r#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":"lots","currency":"USD"}]}"#.to_string(),
        13 => r#"{"region":"Jilin","period":"2019","facts":[{"region":"Jilin","period":"2019","flow":"total","value":{"$gt":0},"currency":"USD"}]}"#.to_string(),
        14 => format!(r#"{{"region":"Jilin","period":"2019","pad":"{}"}}"#, "x".repeat(1_100_000)),
        _ => r#"{"region":"Jilin","period":"2019","language":"<script>"}"#.to_string(),
    };
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_hostile_and_good_messages() {
    let bus = Bus::new().await;
    let mut results = bus.results("bulletin.#").await;
    let mut worker = bus.spawn_worker(&[]);
    let mut expected: HashMap<String, bool> = HashMap::new();
    for i in 0..200usize {
        let id = format!("h-{i}");
        let is_good = i.is_multiple_of(4);
        let body = if is_good {
            good(i / 4).to_string().into_bytes()
        } else {
            bad(i)
        };
        bus.publish(&body, &id, tradebulletin::broker::json_properties()).await;
        expected.insert(id, is_good);
    }
    let received = collect(&mut results, 200, Duration::from_secs(240)).await;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker stays up: {}",
        worker.log()
    );
    let by_id: HashMap<&str, &crate::helpers::Received> = received.iter().map(|r| (r.job_id(), r)).collect();
    let dead = bus.depth(&bus.topology.dead_letter_queue).await as usize;
    let (mut good_ok, mut bad_failed) = (0, 0);
    for (id, is_good) in &expected {
        match by_id.get(id.as_str()) {
            Some(r) if *is_good => {
                assert_eq!(r.status(), "succeeded", "{id}: {}", r.body);
                good_ok += 1;
            }
            Some(r) => {
                assert_eq!(r.status(), "failed", "{id}: {}", r.body);
                assert_schema("result", &r.body);
                let message = r.body["error"]["message"].as_str().unwrap();
                assert!(
                    message.len() > 10 && message.len() < 2000,
                    "{id}: a clear, bounded message: {message}"
                );
                bad_failed += 1;
            }
            None => assert!(!is_good, "good job {id} has no result"),
        }
    }
    println!("hostile: sent 200, good succeeded {good_ok}, bad failed {bad_failed}, dead letters {dead}");
    assert_eq!(good_ok, 50);
    assert_eq!(
        bad_failed + dead,
        150,
        "every bad message got a failed result or a dead letter"
    );
    worker.signal("TERM");
    assert!(worker.wait(Duration::from_secs(30)).is_some_and(|s| s.success()));
    bus.cleanup().await;
}
