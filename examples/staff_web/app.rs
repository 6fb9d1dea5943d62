//! The staff_web application: an in-memory staff store, JSON endpoints that
//! change it and broadcast the change, the SSE bridge, and the page.
//!
//! Shared by the example's `main` and the browser tests, which serve the
//! same router in process.
// Each of the two users of this module uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use staff_pubsub::sse::{PresenceGrant, SseBridge};
use staff_pubsub::staff::{
    self, Department, DepartmentEvent, Message, Team, TeamEvent, TeamMembership,
    TeamMembershipEvent,
};
use staff_pubsub::{PubSub, Topic, Uuid};

/// The page: HTML, CSS and JavaScript, embedded in the binary.
pub const INDEX_HTML: &str = include_str!("index.html");

/// The largest request body accepted, in bytes: larger is a 413.
pub const MAX_BODY: usize = 16 * 1024;

/// The longest name accepted, in characters.
pub const MAX_NAME: usize = 100;

/// The people every node starts with (people are not edited in this
/// example): the same ids on every node.
pub const PEOPLE: [(u128, &str); 6] = [
    (0x0192_0000_0000_7000_8000_0000_0000_0001, "Ada Lovelace"),
    (0x0192_0000_0000_7000_8000_0000_0000_0002, "Grace Hopper"),
    (0x0192_0000_0000_7000_8000_0000_0000_0003, "Alan Turing"),
    (
        0x0192_0000_0000_7000_8000_0000_0000_0004,
        "Katherine Johnson",
    ),
    (0x0192_0000_0000_7000_8000_0000_0000_0005, "Edsger Dijkstra"),
    (0x0192_0000_0000_7000_8000_0000_0000_0006, "Barbara Liskov"),
];

const ENGINEERING: u128 = 0x0192_0000_0000_7000_8000_0000_0001_0001;
const OPERATIONS: u128 = 0x0192_0000_0000_7000_8000_0000_0001_0002;
const PLATFORM: u128 = 0x0192_0000_0000_7000_8000_0000_0002_0001;
const WEB: u128 = 0x0192_0000_0000_7000_8000_0000_0002_0002;
const SUPPORT: u128 = 0x0192_0000_0000_7000_8000_0000_0002_0003;

/// A department as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct DepartmentView {
    /// Its id.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its teams, by name.
    pub teams: Vec<TeamView>,
}

/// A team as the page shows it.
#[derive(Clone, Debug, Serialize)]
pub struct TeamView {
    /// Its id.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its people's ids.
    pub members: Vec<Uuid>,
}

#[derive(Clone, Debug)]
struct StoredTeam {
    name: String,
    department: Uuid,
    /// person -> membership id.
    members: BTreeMap<Uuid, Uuid>,
}

/// One node's staff data, in memory.
///
/// Each node has its own store: the handlers change it and broadcast the
/// change, and every node applies the staff events it receives
/// ([`Store::apply`]), so the stores of nodes on one Redis stay in step
/// from the moment they run. A node started later starts from the seed
/// and does not learn earlier changes.
#[derive(Debug, Default)]
pub struct Store {
    departments: BTreeMap<Uuid, String>,
    teams: BTreeMap<Uuid, StoredTeam>,
    people: BTreeMap<Uuid, String>,
    /// Deleted ids, so that an event arriving late cannot bring them back.
    deleted: HashSet<Uuid>,
}

impl Store {
    /// The seed every node starts from: two departments, three teams, six
    /// people.
    #[must_use]
    pub fn seeded() -> Self {
        let mut store = Self::default();
        for (id, name) in PEOPLE {
            store.people.insert(Uuid::from_u128(id), name.to_owned());
        }
        for (id, name) in [(ENGINEERING, "Engineering"), (OPERATIONS, "Operations")] {
            store
                .departments
                .insert(Uuid::from_u128(id), name.to_owned());
        }
        for (id, name, department) in [
            (PLATFORM, "Platform", ENGINEERING),
            (WEB, "Web", ENGINEERING),
            (SUPPORT, "Support", OPERATIONS),
        ] {
            store.teams.insert(
                Uuid::from_u128(id),
                StoredTeam {
                    name: name.to_owned(),
                    department: Uuid::from_u128(department),
                    members: BTreeMap::new(),
                },
            );
        }
        store
    }

    /// Renames a department without telling anyone (for tests of `resync`).
    pub fn rename_department_silently(&mut self, department: Uuid, name: &str) {
        if let Some(stored) = self.departments.get_mut(&department) {
            name.clone_into(stored);
        }
    }

    /// The state the page shows, as JSON.
    #[must_use]
    pub fn view(&self, node: &str) -> serde_json::Value {
        let departments: Vec<DepartmentView> = self
            .departments
            .iter()
            .map(|(uuid, name)| DepartmentView {
                uuid: *uuid,
                name: name.clone(),
                teams: self
                    .teams
                    .iter()
                    .filter(|(_, team)| team.department == *uuid)
                    .map(|(uuid, team)| TeamView {
                        uuid: *uuid,
                        name: team.name.clone(),
                        members: team.members.keys().copied().collect(),
                    })
                    .collect(),
            })
            .collect();
        let people: Vec<_> = self
            .people
            .iter()
            .map(|(uuid, name)| json!({"uuid": uuid, "name": name}))
            .collect();
        json!({"node": node, "departments": departments, "people": people})
    }

    /// Applies a staff event received from any node (this one included):
    /// idempotent, and deleted ids stay deleted.
    pub fn apply(&mut self, message: &Message) {
        match message {
            Message::Department(event, department) => {
                let id = department.uuid;
                match event {
                    DepartmentEvent::Deleted => {
                        self.deleted.insert(id);
                        self.departments.remove(&id);
                        self.teams.retain(|_, team| team.department != id);
                    }
                    _ if self.deleted.contains(&id) => {}
                    DepartmentEvent::Created => {
                        let name = department.name.clone().unwrap_or_default();
                        self.departments.entry(id).or_insert(name);
                    }
                    DepartmentEvent::Updated => {
                        if let (Some(stored), Some(name)) =
                            (self.departments.get_mut(&id), &department.name)
                        {
                            name.clone_into(stored);
                        }
                    }
                }
            }
            Message::Team(event, team) => {
                let id = team.uuid;
                match event {
                    TeamEvent::Deleted => {
                        self.deleted.insert(id);
                        self.teams.remove(&id);
                    }
                    _ if self.deleted.contains(&id) => {}
                    TeamEvent::Created => {
                        if let Some(department) = team.department_uuid {
                            if self.departments.contains_key(&department) {
                                self.teams.entry(id).or_insert_with(|| StoredTeam {
                                    name: team.name.clone().unwrap_or_default(),
                                    department,
                                    members: BTreeMap::new(),
                                });
                            }
                        }
                    }
                    TeamEvent::Updated => {
                        if let (Some(stored), Some(name)) = (self.teams.get_mut(&id), &team.name) {
                            name.clone_into(&mut stored.name);
                        }
                    }
                }
            }
            Message::TeamMembership(event, membership) => {
                let Some(team) = self.teams.get_mut(&membership.team_uuid) else {
                    return;
                };
                match event {
                    TeamMembershipEvent::TeamPersonAdded => {
                        if !self.deleted.contains(&membership.uuid) {
                            team.members
                                .entry(membership.staff_person_uuid)
                                .or_insert(membership.uuid);
                        }
                    }
                    TeamMembershipEvent::TeamPersonRemoved => {
                        self.deleted.insert(membership.uuid);
                        if team.members.get(&membership.staff_person_uuid) == Some(&membership.uuid)
                        {
                            team.members.remove(&membership.staff_person_uuid);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The application: its server, store and node name. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pubsub: PubSub<Message>,
    store: Arc<Mutex<Store>>,
    node: Arc<str>,
}

impl App {
    /// An application on `pubsub`, its store seeded, named `node` on the page.
    ///
    /// It spawns the task that applies the staff events of other nodes to
    /// the store: call it within a tokio runtime.
    pub fn new(pubsub: PubSub<Message>, node: &str) -> Result<Self, staff_pubsub::Error> {
        let app = Self {
            pubsub,
            store: Arc::new(Mutex::new(Store::seeded())),
            node: node.into(),
        };
        // Department events reach `staff:departments`; team and membership
        // events reach `staff:teams`: one copy of each.
        let mut events = app
            .pubsub
            .subscribe_many([staff::topic_departments(), staff::topic_teams()])?;
        let store = Arc::downgrade(&app.store);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(message) => match store.upgrade() {
                        Some(store) => lock(&store).apply(&message),
                        None => break,
                    },
                    Err(staff_pubsub::RecvError::Closed) => break,
                    // Lost events: a real application reloads from its
                    // database here; this example has none.
                    Err(error) => eprintln!("staff_web: store replication: {error}"),
                }
            }
        });
        Ok(app)
    }

    /// The server.
    #[must_use]
    pub fn pubsub(&self) -> &PubSub<Message> {
        &self.pubsub
    }

    /// The store, locked.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The SSE bridge the page subscribes through: topics of the stock spec
    /// only, at most 8 per connection, and none of a single person (this
    /// page has no use for them: an example of the authorization hook).
    /// A page that names its viewer (`&viewer=<id>&name=<name>`) is
    /// present on `staff:departments` for as long as its connection
    /// lasts; every page there is sent who is viewing (`presence_state`,
    /// `presence_diff`).
    #[must_use]
    pub fn bridge(&self) -> SseBridge<Message> {
        let node = self.node.to_string();
        SseBridge::new(self.pubsub.clone(), staff::parse_topic, Message::event_name)
            .max_topics(8)
            .authorize(|_request, topic| !topic.to_string().starts_with("staff:person:"))
            .presence(move |request, topic| viewing(request, topic, &node))
    }

    /// The routes: `/` (the page), `/events` (SSE), `/api/state`, and the
    /// JSON `POST` endpoints under `/api/`.
    pub fn router(&self, bridge: &SseBridge<Message>) -> Router {
        Router::new()
            .route("/", get(index))
            .route("/events", bridge.route())
            .route("/api/state", get(state))
            .route("/api/departments", post(create_department))
            .route("/api/departments/rename", post(rename_department))
            .route("/api/departments/delete", post(delete_department))
            .route("/api/teams", post(create_team))
            .route("/api/teams/rename", post(rename_team))
            .route("/api/teams/delete", post(delete_team))
            .route("/api/members", post(add_member))
            .route("/api/members/delete", post(remove_member))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such page") })
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }
}

/// Someone viewing the page: the metadata of their presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    /// The name the page gave.
    pub name: String,
    /// The node the page is connected to.
    pub node: String,
}

/// The longest viewer id or name accepted, in bytes.
pub const MAX_VIEWER: usize = 64;

/// What a page's connection does with `topic`'s presence: on
/// `staff:departments`, present as the `viewer` and `name` of its query
/// when it gives both (a real application takes them from its session),
/// else only watching; nothing on other topics.
fn viewing(request: &Parts, topic: &Topic, node: &str) -> Option<PresenceGrant<Viewer>> {
    if *topic != staff::topic_departments() {
        return None;
    }
    let (mut id, mut name) = (None, None);
    for pair in request.uri.query().unwrap_or("").split('&') {
        let (field, value) = pair.split_once('=').unwrap_or((pair, ""));
        match field {
            "viewer" => id = decode(value),
            "name" => name = decode(value),
            _ => {}
        }
    }
    Some(match (id, name) {
        (Some(id), Some(name)) if !id.is_empty() && !name.trim().is_empty() => {
            let name = name.trim().to_owned();
            let node = node.to_owned();
            PresenceGrant::track(id, Viewer { name, node })
        }
        _ => PresenceGrant::Watch,
    })
}

/// A query value, percent- and `+`-decoded, if it is UTF-8 of at most
/// [`MAX_VIEWER`] bytes.
fn decode(value: &str) -> Option<String> {
    let mut bytes = Vec::new();
    let mut input = value.bytes();
    while let Some(byte) = input.next() {
        bytes.push(match byte {
            b'+' => b' ',
            b'%' => {
                let hex = [input.next()?, input.next()?];
                u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?
            }
            other => other,
        });
    }
    (bytes.len() <= MAX_VIEWER)
        .then(|| String::from_utf8(bytes).ok())
        .flatten()
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock leaves the store as it was at the
    // panic: still usable for a demo.
    store.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error response: `{"error": "..."}` with a 4xx status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn not_found(what: &str, uuid: Uuid) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("unknown {what} {uuid}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.message}))).into_response()
    }
}

impl From<staff_pubsub::Error> for ApiError {
    fn from(error: staff_pubsub::Error) -> Self {
        // The change is made and this node's pages have it; other nodes
        // may not.
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("saved, but not sent to every node: {error}"),
        )
    }
}

/// The body as `T`, or a JSON error: 413 when too large, 400 when not JSON
/// or not of `T`'s shape.
fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            format!("{} (at most {MAX_BODY} bytes)", rejection.body_text()),
        )
    })?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON: {error}")))
}

fn name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a name has 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(name.to_owned())
}

async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(INDEX_HTML))
}

async fn state(State(app): State<App>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(app.store().view(&app.node)),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDepartment {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    uuid: Uuid,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delete {
    uuid: Uuid,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTeam {
    department_uuid: Uuid,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Member {
    team_uuid: Uuid,
    person_uuid: Uuid,
}

type Reply = Result<Json<serde_json::Value>, ApiError>;

async fn create_department(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: NewDepartment = parse(body)?;
    let department = Department {
        uuid: Uuid::now_v7(),
        name: Some(name(&request.name)?),
    };
    app.store().apply(&Message::Department(
        DepartmentEvent::Created,
        department.clone(),
    ));
    let uuid = department.uuid;
    staff::broadcast_department_on(&app.pubsub, DepartmentEvent::Created, department).await?;
    Ok(Json(json!({"uuid": uuid})))
}

async fn rename_department(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Rename = parse(body)?;
    let department = Department {
        uuid: request.uuid,
        name: Some(name(&request.name)?),
    };
    let message = Message::Department(DepartmentEvent::Updated, department.clone());
    {
        let mut store = app.store();
        if !store.departments.contains_key(&request.uuid) {
            return Err(ApiError::not_found("department", request.uuid));
        }
        store.apply(&message);
    }
    staff::broadcast_department_on(&app.pubsub, DepartmentEvent::Updated, department).await?;
    Ok(Json(json!({"uuid": request.uuid})))
}

async fn delete_department(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Delete = parse(body)?;
    let teams: Vec<(Uuid, String)> = {
        let mut store = app.store();
        if !store.departments.contains_key(&request.uuid) {
            return Err(ApiError::not_found("department", request.uuid));
        }
        let teams = store
            .teams
            .iter()
            .filter(|(_, team)| team.department == request.uuid)
            .map(|(uuid, team)| (*uuid, team.name.clone()))
            .collect();
        let department = Department {
            uuid: request.uuid,
            name: None,
        };
        store.apply(&Message::Department(DepartmentEvent::Deleted, department));
        teams
    };
    // Its teams go with it: each one's deletion is announced first.
    for (uuid, name) in teams {
        let team = Team {
            uuid,
            name: Some(name),
            department_uuid: Some(request.uuid),
        };
        staff::broadcast_team_on(&app.pubsub, TeamEvent::Deleted, team).await?;
    }
    let department = Department {
        uuid: request.uuid,
        name: None,
    };
    staff::broadcast_department_on(&app.pubsub, DepartmentEvent::Deleted, department).await?;
    Ok(Json(json!({"uuid": request.uuid})))
}

async fn create_team(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: NewTeam = parse(body)?;
    let team = Team {
        uuid: Uuid::now_v7(),
        name: Some(name(&request.name)?),
        department_uuid: Some(request.department_uuid),
    };
    {
        let mut store = app.store();
        if !store.departments.contains_key(&request.department_uuid) {
            return Err(ApiError::not_found("department", request.department_uuid));
        }
        store.apply(&Message::Team(TeamEvent::Created, team.clone()));
    }
    let uuid = team.uuid;
    staff::broadcast_team_on(&app.pubsub, TeamEvent::Created, team).await?;
    Ok(Json(json!({"uuid": uuid})))
}

async fn rename_team(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Rename = parse(body)?;
    let name = name(&request.name)?;
    let team = {
        let mut store = app.store();
        let Some(stored) = store.teams.get(&request.uuid) else {
            return Err(ApiError::not_found("team", request.uuid));
        };
        let team = Team {
            uuid: request.uuid,
            name: Some(name),
            department_uuid: Some(stored.department),
        };
        store.apply(&Message::Team(TeamEvent::Updated, team.clone()));
        team
    };
    staff::broadcast_team_on(&app.pubsub, TeamEvent::Updated, team).await?;
    Ok(Json(json!({"uuid": request.uuid})))
}

async fn delete_team(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Delete = parse(body)?;
    let team = {
        let mut store = app.store();
        let Some(stored) = store.teams.get(&request.uuid) else {
            return Err(ApiError::not_found("team", request.uuid));
        };
        let team = Team {
            uuid: request.uuid,
            name: Some(stored.name.clone()),
            department_uuid: Some(stored.department),
        };
        store.apply(&Message::Team(TeamEvent::Deleted, team.clone()));
        team
    };
    staff::broadcast_team_on(&app.pubsub, TeamEvent::Deleted, team).await?;
    Ok(Json(json!({"uuid": request.uuid})))
}

async fn add_member(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Member = parse(body)?;
    let membership = {
        let mut store = app.store();
        if !store.people.contains_key(&request.person_uuid) {
            return Err(ApiError::not_found("person", request.person_uuid));
        }
        let Some(team) = store.teams.get(&request.team_uuid) else {
            return Err(ApiError::not_found("team", request.team_uuid));
        };
        if team.members.contains_key(&request.person_uuid) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "the person is in the team already",
            ));
        }
        let membership = TeamMembership {
            uuid: Uuid::now_v7(),
            team_uuid: request.team_uuid,
            staff_person_uuid: request.person_uuid,
        };
        store.apply(&Message::TeamMembership(
            TeamMembershipEvent::TeamPersonAdded,
            membership.clone(),
        ));
        membership
    };
    let uuid = membership.uuid;
    staff::broadcast_team_membership_on(
        &app.pubsub,
        TeamMembershipEvent::TeamPersonAdded,
        membership,
    )
    .await?;
    Ok(Json(json!({"uuid": uuid})))
}

async fn remove_member(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> Reply {
    let request: Member = parse(body)?;
    let membership = {
        let mut store = app.store();
        let Some(team) = store.teams.get(&request.team_uuid) else {
            return Err(ApiError::not_found("team", request.team_uuid));
        };
        let Some(uuid) = team.members.get(&request.person_uuid).copied() else {
            return Err(ApiError::not_found("member", request.person_uuid));
        };
        let membership = TeamMembership {
            uuid,
            team_uuid: request.team_uuid,
            staff_person_uuid: request.person_uuid,
        };
        store.apply(&Message::TeamMembership(
            TeamMembershipEvent::TeamPersonRemoved,
            membership.clone(),
        ));
        membership
    };
    staff::broadcast_team_membership_on(
        &app.pubsub,
        TeamMembershipEvent::TeamPersonRemoved,
        membership,
    )
    .await?;
    Ok(Json(json!({"uuid": request.team_uuid})))
}
