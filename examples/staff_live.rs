//! LiveView-like views watching staff data change, on the in-process default
//! server: no Redis, no NATS, nothing to start.
//!
//! Three subscriber tasks play the pages of a staff app: the dashboard of one
//! team, the page of one department, and the people list. The main task
//! creates, updates and deletes departments, teams, people and memberships
//! through the generated `broadcast_*` functions; each view prints what
//! reaches it and how it reacts.
//!
//! Run it with `cargo run --example staff_live`.

use std::time::Duration;

use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Person, PersonEvent, Team, TeamEvent,
    TeamMembership, TeamMembershipEvent,
};
use staff_pubsub::{RecvError, Subscription, Topic, Uuid};
use tokio::sync::oneshot;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ops = Uuid::now_v7();
    let squad = Uuid::now_v7();
    let ada = Uuid::now_v7();
    let grace = Uuid::now_v7();

    // Subscribe before anything is broadcast, as a LiveView does in mount/3.
    let views = [
        spawn_view(
            "team dashboard",
            staff::subscribe(staff::topic_team(squad))?,
        ),
        spawn_view(
            "department page",
            staff::subscribe(staff::topic_department(ops))?,
        ),
        spawn_view("people list", staff::subscribe(staff::topic_people())?),
    ];

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

    staff::broadcast_department(DepartmentEvent::Created, department("Operations")).await?;
    staff::broadcast_team(TeamEvent::Created, team("Squad A")).await?;
    staff::broadcast_person(PersonEvent::Created, Person { uuid: ada }).await?;
    staff::broadcast_person(PersonEvent::Created, Person { uuid: grace }).await?;
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonAdded, membership(ada)).await?;
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonAdded, membership(grace))
        .await?;
    staff::broadcast_team(TeamEvent::Updated, team("Squad Alpha")).await?;
    staff::broadcast_person(PersonEvent::EmploymentChanged, Person { uuid: grace }).await?;
    staff::broadcast_team_membership(TeamMembershipEvent::TeamPersonRemoved, membership(grace))
        .await?;
    staff::broadcast_department(DepartmentEvent::Updated, department("Ops")).await?;
    staff::broadcast_team(TeamEvent::Deleted, team("Squad Alpha")).await?;
    staff::broadcast_person(PersonEvent::Deleted, Person { uuid: grace }).await?;
    staff::broadcast_department(DepartmentEvent::Deleted, department("Ops")).await?;

    for (stop, view) in views {
        let _ = stop.send(());
        let (name, seen) = tokio::time::timeout(Duration::from_secs(5), view).await??;
        println!("{name}: {seen} events");
    }
    let stats = staff::server().stats();
    println!(
        "server: {} broadcasts, {} copies delivered, {} lagged, {} live topics",
        stats.published, stats.delivered, stats.lagged, stats.topics
    );
    Ok(())
}

type View = (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<(&'static str, usize)>,
);

/// A view task: handles each message until told to stop, then takes what is
/// still queued, as a LiveView handles its mailbox.
fn spawn_view(name: &'static str, mut subscription: Subscription<Message>) -> View {
    let (stop_tx, mut stop) = oneshot::channel();
    let topics: Vec<Topic> = subscription.topics().to_vec();
    let task = tokio::spawn(async move {
        println!(
            "{name}: watching {}",
            topics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut seen = 0;
        loop {
            tokio::select! {
                biased;
                item = subscription.recv() => match item {
                    Ok(message) => { seen += 1; handle_info(name, &message); }
                    Err(RecvError::Lagged(n)) => println!("{name}: missed {n} events, reloading"),
                    Err(RecvError::Gap) => println!("{name}: connection gap, reloading"),
                    Err(_) => break,
                },
                _ = &mut stop => {
                    while let Ok(message) = subscription.try_recv() {
                        seen += 1;
                        handle_info(name, &message);
                    }
                    break;
                }
            }
        }
        (name, seen)
    });
    (stop_tx, task)
}

/// The analog of `handle_info({:staff, event, payload}, socket)`: a few
/// events specifically, the rest generically.
fn handle_info(view: &str, message: &Message) {
    match message {
        Message::Department(DepartmentEvent::Deleted, department) => {
            println!(
                "{view}: department {} deleted, redirecting",
                short(department.uuid)
            );
        }
        Message::Team(TeamEvent::Deleted, team) => {
            println!("{view}: team {} deleted, redirecting", short(team.uuid));
        }
        Message::TeamMembership(event, membership) => {
            let verb = match event {
                TeamMembershipEvent::TeamPersonAdded => "joined",
                TeamMembershipEvent::TeamPersonRemoved => "left",
            };
            println!(
                "{view}: person {} {verb} team {}",
                short(membership.staff_person_uuid),
                short(membership.team_uuid)
            );
        }
        other => println!(
            "{view}: {} {}, reloading",
            other.event_name(),
            short(other.uuid())
        ),
    }
}

/// The last block of a UUID: enough to tell the example's ids apart.
fn short(id: Uuid) -> String {
    id.to_string()
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .to_owned()
}
