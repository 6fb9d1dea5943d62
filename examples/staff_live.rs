//! Live staff pages, in one process: nothing to install, nothing to start.
//!
//! A staff app shows pages that update themselves when the data behind
//! them changes. Here three pages are open: the dashboard of one team, the
//! page of one department, and the list of all people. Each page
//! subscribes to the topics it shows. An admin then makes changes; each
//! change is announced once with a generated `broadcast_*` function, and
//! the spec's routes decide which topics (and so which pages) it reaches.
//! The output shows, in time order, each change and what each page does
//! about it.
//!
//! Run it with `cargo run --example staff_live`.

use std::collections::HashMap;

use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Person, PersonEvent, Team, TeamEvent,
    TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{Subscription, TryRecvError, Uuid};

/// An open page: what it shows, and the subscription that keeps it fresh.
struct Page {
    title: &'static str,
    subscription: Subscription<Message>,
}

/// Names for the ids, so that the output reads as a story.
struct Names(HashMap<Uuid, &'static str>);

impl Names {
    fn of(&self, id: Uuid) -> &'static str {
        self.0.get(&id).copied().unwrap_or("someone")
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (ops, squad, ada, grace) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    let names = Names(HashMap::from([
        (ops, "Operations"),
        (squad, "Squad A"),
        (ada, "Ada"),
        (grace, "Grace"),
    ]));

    // Pages subscribe when they open, before anything changes.
    let mut pages = [
        Page {
            title: "Squad A dashboard",
            subscription: staff::subscribe(staff::topic_team(squad))?,
        },
        Page {
            title: "Operations page",
            subscription: staff::subscribe(staff::topic_department(ops))?,
        },
        Page {
            title: "People list",
            subscription: staff::subscribe(staff::topic_people())?,
        },
    ];
    for page in &pages {
        let topics: Vec<String> = page
            .subscription
            .topics()
            .iter()
            .map(ToString::to_string)
            .collect();
        println!(
            "[{}] opened, listening to {}",
            page.title,
            topics.join(", ")
        );
    }
    println!();
    println!("The Operations page also hears about teams: `broadcast_team` sends each team");
    println!("event to the team's department topic too (the route `#[route(department)]`).");

    let department = |name: &str| Department {
        uuid: ops,
        name: Some(name.to_owned()),
    };
    let team = |name: &str| Team {
        uuid: squad,
        name: Some(name.to_owned()),
        department_uuid: Some(ops),
    };
    let membership = |person: Uuid| TeamMembership {
        uuid: Uuid::now_v7(),
        team_uuid: squad,
        staff_person_uuid: person,
    };

    action("creates the Operations department");
    staff::broadcast_department(DepartmentEvent::Created, department("Operations")).await?;
    show(&mut pages, &names);

    action("creates team Squad A in Operations");
    staff::broadcast_team(TeamEvent::Created, team("Squad A")).await?;
    show(&mut pages, &names);

    action("adds Ada and Grace as people");
    staff::broadcast_person(PersonEvent::Created, Person { uuid: ada }).await?;
    staff::broadcast_person(PersonEvent::Created, Person { uuid: grace }).await?;
    show(&mut pages, &names);

    action("puts Ada and Grace in Squad A");
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonAdded, membership(ada)).await?;
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonAdded, membership(grace))
        .await?;
    show(&mut pages, &names);

    action("renames Squad A to Squad Alpha");
    staff::broadcast_team(TeamEvent::Updated, team("Squad Alpha")).await?;
    show(&mut pages, &names);

    action("moves Grace out of the squad");
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonRemoved, membership(grace))
        .await?;
    show(&mut pages, &names);

    action("deletes the squad, then the department");
    staff::broadcast_team(TeamEvent::Deleted, team("Squad Alpha")).await?;
    staff::broadcast_department(DepartmentEvent::Deleted, department("Operations")).await?;
    show(&mut pages, &names);

    let stats = staff::server().stats();
    println!();
    println!(
        "{} broadcasts reached the open pages {} times in all.",
        stats.published, stats.delivered
    );
    Ok(())
}

fn action(what: &str) {
    println!();
    println!("admin {what}");
}

/// Each page handles what reached it. In-process, a broadcast has reached
/// every subscriber when its call returns, so this shows it at once.
fn show(pages: &mut [Page], names: &Names) {
    for page in pages {
        loop {
            match page.subscription.try_recv() {
                Ok(message) => println!("  [{}] {}", page.title, react(&message, names)),
                Err(TryRecvError::Empty) => break,
                Err(other) => {
                    println!("  [{}] {other}: reloading everything", page.title);
                    break;
                }
            }
        }
    }
}

/// What a page does with one message: the analog of a LiveView's
/// `handle_info({:staff, event, payload}, socket)`.
fn react(message: &Message, names: &Names) -> String {
    match message {
        Message::Department(DepartmentEvent::Deleted, d) => {
            format!("department {} is gone: closes itself", names.of(d.uuid))
        }
        Message::Department(_, d) => format!(
            "shows department name {:?}",
            d.name.as_deref().unwrap_or("")
        ),
        Message::Team(TeamEvent::Created, t) => {
            format!("shows the new team {:?}", t.name.as_deref().unwrap_or(""))
        }
        Message::Team(TeamEvent::Deleted, t) => {
            format!("team {} is gone: removes it", names.of(t.uuid))
        }
        Message::Team(_, t) => format!("shows team name {:?}", t.name.as_deref().unwrap_or("")),
        Message::Person(PersonEvent::Created, p) => {
            format!("adds {} to the list", names.of(p.uuid))
        }
        Message::Person(event, p) => format!("refreshes {} ({event})", names.of(p.uuid)),
        Message::TeamMembership(event, m) => {
            let verb = match event {
                TeamMembershipEvent::TeamPersonAdded => "joined",
                TeamMembershipEvent::TeamPersonRemoved => "left",
            };
            format!(
                "shows that {} {verb} {}",
                names.of(m.staff_person_uuid),
                names.of(m.team_uuid)
            )
        }
    }
}
