use std::time::Duration;

use futures_util::StreamExt;

use super::*;

const TEAM: Topic = Topic::new("team:1");
const OTHER: Topic = Topic::new("team:2");

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Meta {
    name: String,
    status: String,
}

fn meta(name: &str, status: &str) -> Meta {
    Meta {
        name: name.to_owned(),
        status: status.to_owned(),
    }
}

fn keys(presences: &[Presence<Meta>]) -> Vec<(&str, &str)> {
    presences
        .iter()
        .map(|presence| (&*presence.key, presence.meta.status.as_str()))
        .collect()
}

async fn next(diffs: &mut PresenceDiffs<Meta>) -> Arc<PresenceDiff<Meta>> {
    tokio::time::timeout(Duration::from_secs(5), diffs.recv())
        .await
        .expect("a diff in time")
        .expect("a diff")
}

#[tokio::test]
async fn track_lists_and_reports_a_join_and_drop_a_leave() {
    let pubsub = PubSub::<()>::new();
    let mut diffs = pubsub.presence_diffs::<Meta>(TEAM);
    let ada = pubsub
        .track(TEAM, "user-1", meta("Ada", "viewing"))
        .unwrap();
    assert_eq!(keys(&pubsub.presences(TEAM)), [("user-1", "viewing")]);
    let join = next(&mut diffs).await;
    assert_eq!(
        (join.topic, keys(&join.joins), join.leaves.len()),
        (TEAM, vec![("user-1", "viewing")], 0)
    );
    assert_eq!(join.joins[0].id, ada.id());
    drop(ada);
    let leave = next(&mut diffs).await;
    assert_eq!(
        (leave.joins.len(), keys(&leave.leaves)),
        (0, vec![("user-1", "viewing")])
    );
    assert!(pubsub.presences::<Meta>(TEAM).is_empty());
    assert!(pubsub.tracker::<Meta>().is_empty());
}

#[tokio::test]
async fn the_same_key_twice_is_two_presences_grouped_by_list() {
    let pubsub = PubSub::<()>::new();
    let laptop = pubsub.track(TEAM, "user-1", meta("Ada", "laptop")).unwrap();
    let phone = pubsub.track(TEAM, "user-1", meta("Ada", "phone")).unwrap();
    let _grace = pubsub
        .track(TEAM, "user-2", meta("Grace", "viewing"))
        .unwrap();
    assert_ne!(laptop.id(), phone.id());
    let list = pubsub.tracker::<Meta>().list(TEAM);
    assert_eq!(list.len(), 2);
    assert_eq!(
        keys(&list["user-1"]),
        [("user-1", "laptop"), ("user-1", "phone")]
    );
    drop(laptop);
    assert_eq!(
        keys(&pubsub.tracker::<Meta>().list(TEAM)["user-1"]),
        [("user-1", "phone")]
    );
}

#[tokio::test]
async fn update_is_one_diff_with_the_new_joining_and_the_old_leaving() {
    let pubsub = PubSub::<()>::new();
    let mut ada = pubsub
        .track(TEAM, "user-1", meta("Ada", "viewing"))
        .unwrap();
    let mut diffs = pubsub.presence_diffs::<Meta>(TEAM);
    ada.update(meta("Ada", "editing")).unwrap();
    let diff = next(&mut diffs).await;
    assert_eq!(keys(&diff.joins), [("user-1", "editing")]);
    assert_eq!(keys(&diff.leaves), [("user-1", "viewing")]);
    assert_eq!((diff.joins[0].id, diff.leaves[0].id), (ada.id(), ada.id()));
    assert_eq!(keys(&pubsub.presences(TEAM)), [("user-1", "editing")]);
    assert_eq!(ada.meta().status, "editing");
    assert!(diffs.try_recv().is_none(), "one diff only");
}

#[tokio::test]
async fn diffs_of_other_topics_and_types_are_not_delivered() {
    let pubsub = PubSub::<()>::new();
    let mut diffs = pubsub.presence_diffs::<Meta>(TEAM);
    let _elsewhere = pubsub
        .track(OTHER, "user-1", meta("Ada", "viewing"))
        .unwrap();
    let _other_type = pubsub.track(TEAM, "user-1", "plain".to_owned()).unwrap();
    assert!(diffs.try_recv().is_none());
    assert!(pubsub.presences::<Meta>(TEAM).is_empty());
    assert_eq!(pubsub.presences::<String>(TEAM).len(), 1);
}

#[tokio::test]
async fn watch_gives_a_list_that_the_diffs_continue() {
    let pubsub = PubSub::<()>::new();
    let tracker = pubsub.tracker::<Meta>();
    let before = tracker
        .track(TEAM, "user-1", meta("Ada", "viewing"))
        .unwrap();
    let (list, mut diffs) = tracker.watch(TEAM);
    let mut view: BTreeMap<PresenceId, String> =
        list.iter().map(|p| (p.id, p.meta.status.clone())).collect();
    let mut guards = Vec::new();
    for n in 0..20 {
        guards.push(
            tracker
                .track(TEAM, format!("user-{n}"), meta("x", "viewing"))
                .unwrap(),
        );
        if n % 3 == 0 {
            guards.remove(0).untrack();
        }
    }
    drop(before);
    while let Some(diff) = diffs.try_recv() {
        let diff = diff.unwrap();
        for leave in &diff.leaves {
            assert!(
                view.remove(&leave.id).is_some(),
                "a leave of an unknown presence"
            );
        }
        for join in &diff.joins {
            assert!(
                view.insert(join.id, join.meta.status.clone()).is_none(),
                "a join twice"
            );
        }
    }
    let now: BTreeMap<PresenceId, String> = tracker
        .presences(TEAM)
        .iter()
        .map(|p| (p.id, p.meta.status.clone()))
        .collect();
    assert_eq!(view, now);
    assert_eq!(now.len(), guards.len());
}

#[tokio::test]
async fn limits_refuse_with_typed_errors() {
    let pubsub = PubSub::<()>::new();
    let tracker = pubsub.tracker::<Meta>();
    tracker.set_limits(PresenceLimits {
        max_presences: 2,
        max_meta_bytes: 40,
    });
    let first = tracker.track(TEAM, "a", meta("Ada", "x")).unwrap();
    let _second = tracker.track(OTHER, "b", meta("Ada", "x")).unwrap();
    assert_eq!(
        tracker.track(TEAM, "c", meta("Ada", "x")).unwrap_err(),
        PresenceError::TooManyPresences { limit: 2 }
    );
    drop(first);
    let mut third = tracker.track(TEAM, "c", meta("Ada", "x")).unwrap();
    let long = "y".repeat(40);
    let size = serde_json::to_vec(&meta(&long, "x")).unwrap().len();
    assert_eq!(
        tracker.track(TEAM, "d", meta(&long, "x")).unwrap_err(),
        PresenceError::MetaTooLarge { size, limit: 40 }
    );
    assert_eq!(
        third.update(meta(&long, "x")).unwrap_err(),
        PresenceError::MetaTooLarge { size, limit: 40 }
    );
    assert_eq!(third.meta().name, "Ada", "a refused update changes nothing");
    assert_eq!(tracker.len(), 2);
}

#[tokio::test]
async fn a_slow_receiver_is_told_it_lagged() {
    let pubsub = PubSub::<()>::new();
    let mut diffs = pubsub.presence_diffs::<Meta>(TEAM);
    let mut ada = pubsub.track(TEAM, "user-1", meta("Ada", "a")).unwrap();
    for _ in 0..DIFF_QUEUE_CAPACITY + 9 {
        ada.update(meta("Ada", "b")).unwrap();
    }
    assert_eq!(diffs.recv().await, Err(PresenceRecvError::Lagged(10)));
    assert_eq!(
        next(&mut diffs).await.leaves.len(),
        1,
        "then the rest, in order"
    );
}

#[tokio::test]
async fn the_stream_ends_when_the_tracker_is_gone() {
    let pubsub = PubSub::<()>::new();
    let mut diffs = pubsub.presence_diffs::<Meta>(TEAM);
    let ada = pubsub.track(TEAM, "user-1", meta("Ada", "a")).unwrap();
    drop(pubsub);
    drop(ada); // the guard kept the tracker: its leave is delivered
    let waiting = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(diff) = diffs.next().await {
            got.push(diff.unwrap());
        }
        got
    });
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].leaves.len(), 1);
}
