//! A library that knows only `staff_pubsub::staff`: it changes teams and
//! broadcasts the stock events, as a staff module shared by applications
//! would. It never names an application's extended spec.

use staff_pubsub::staff::{self, Team, TeamEvent};
use staff_pubsub::{Error, Uuid};

/// Creates a team in `department` and broadcasts `team_created` on the
/// stock spec's default server.
///
/// # Errors
///
/// As [`staff::broadcast_team`].
pub async fn create_team(name: &str, department: Option<Uuid>) -> Result<Team, Error> {
    let team = Team {
        uuid: Uuid::now_v7(),
        name: Some(name.to_owned()),
        department_uuid: department,
    };
    staff::broadcast_team(TeamEvent::Created, team.clone()).await?;
    Ok(team)
}

/// Subscribes to a team's stock topic on the stock spec's default server.
///
/// # Errors
///
/// As [`staff::subscribe`].
pub fn watch_team(team: Uuid) -> Result<staff_pubsub::Subscription<staff::Message>, Error> {
    staff::subscribe(staff::topic_team(team))
}
