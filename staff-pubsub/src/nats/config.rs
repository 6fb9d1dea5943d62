//! Where and how a node reaches NATS: [`NatsConfig`], its URL forms and
//! credentials, and the subjects of a namespace.

use std::fmt;
use std::time::Duration;

use crate::error::{Outcome, TransportError};
use crate::net::{redact, EngineConfig, Secrets};
use crate::position::Retention;
use crate::topic::Topic;

/// The namespace of a [`NatsConfig`] that sets none: the first token of
/// every subject.
pub use crate::net::DEFAULT_NAMESPACE;

/// Where and how a node reaches NATS.
///
/// ```
/// use std::time::Duration;
/// use staff_pubsub::nats::NatsConfig;
/// use staff_pubsub::Topic;
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .namespace("tenant-42")
///     .user_and_password("app", "secret")
///     .connect_timeout(Duration::from_secs(2));
/// assert_eq!(config.subject(&Topic::new("staff:teams")).unwrap(), "tenant-42.staff.teams");
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct NatsConfig {
    pub(super) url: String,
    pub(super) engine: EngineConfig,
    pub(super) credentials: Credentials,
    pub(super) subscription_capacity: usize,
    pub(super) durable: Option<Retention>,
}

#[derive(Clone, PartialEq, Eq)]
pub(super) enum Credentials {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

impl NatsConfig {
    /// A configuration for the NATS server at `url`, with the defaults for
    /// everything else.
    ///
    /// `url` is one server address or several separated by `,` (blanks
    /// around each ignored; the client picks one and fails over to the
    /// others), each `[scheme://][credentials@]host[:port]` as async-nats
    /// reads it: the scheme `nats` (the default when none is written),
    /// `tls`, `ws` or `wss`; the port 4222 by default; the credentials
    /// `user:password` or a token, percent-encoded (`%40` for `@`, `%2C`
    /// for `,`). Credentials in the URL are taken out of every address
    /// before the client sees it and given to it as options, with query
    /// pairs named `pass`, `password`, `token` or `auth_token`; servers that
    /// carry different credentials are refused (the client has one set for
    /// all). Those given by [`user_and_password`](Self::user_and_password)
    /// or [`token`](Self::token) take precedence. `nats://127.0.0.1:4222`,
    /// `app:secret@10.0.0.1`, `nats://a:4222,nats://b:4222` all work. A URL
    /// that does not parse fails [`NatsTransport::connect`](super::NatsTransport::connect), credentials
    /// hidden.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            engine: EngineConfig::default(),
            credentials: Credentials::None,
            subscription_capacity: 65_536,
            durable: None,
        }
    }

    /// Durable delivery: every broadcast is appended to a JetStream stream
    /// that keeps what `retention` says, and every node, the sender
    /// included, delivers it from there, in log order; a node that was
    /// away reads what it missed. See the [module docs](super#durable-delivery)
    /// for what is guaranteed and what it costs. Every node of a namespace
    /// must use the same mode. Default: live delivery, routed by interest.
    pub fn durable(mut self, retention: Retention) -> Self {
        self.durable = Some(retention);
        self
    }

    /// The namespace: the subject prefix of every message, one or more
    /// `.`-separated tokens without white space, `*` or `>`. Nodes of one
    /// namespace reach each other, never those of another. Default
    /// [`DEFAULT_NAMESPACE`](super::DEFAULT_NAMESPACE).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.engine.namespace = namespace.into();
        self
    }

    /// Authenticates with a user and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.credentials = Credentials::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticates with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::Token(token.into());
        self
    }

    /// The largest encoded envelope, in bytes: a broadcast of a larger one
    /// fails, a received larger one is skipped. Default
    /// [`wire::DEFAULT_MAX_MESSAGE_SIZE`](crate::wire::DEFAULT_MAX_MESSAGE_SIZE) (1 MiB); the server's own
    /// `max_payload` (1 MiB by default) applies too.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.engine.max_message_size = bytes;
        self
    }

    /// The most topics one broadcast may list: a broadcast to more fails
    /// (outcome `NotSent`: certainly not sent), a received envelope listing
    /// more (a direct broadcast's, or a durable log entry's: a topic's
    /// subject carries one) is skipped and counted in
    /// [`Stats::rejected`](crate::Stats::rejected). Default
    /// [`DEFAULT_MAX_TOPICS`](crate::wire::DEFAULT_MAX_TOPICS), as Redis's.
    pub fn max_topics(mut self, topics: usize) -> Self {
        self.engine.max_topics = topics;
        self
    }

    /// How long [`NatsTransport::connect`](super::NatsTransport::connect) may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.engine.connect_timeout = timeout;
        self
    }

    /// How long a broadcast waits for its envelopes to be written to the
    /// connection, and [`PubSub::sync`](crate::PubSub::sync) for the server's answer. Default 5 s.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.engine.response_timeout = timeout;
        self
    }

    /// How many received messages of one topic (and of the direct subject)
    /// may wait for this node to handle them, in live mode: one that comes
    /// while that many wait is dropped, and subscribers receive a gap
    /// exactly where the loss is (see the [module docs](super#faults)). In
    /// durable mode, the client's buffer for the log (what it drops, the
    /// reader reads again). Default 65,536.
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.subscription_capacity = messages.max(1);
        self
    }

    /// The servers as shown in `Debug`, errors and logs: without
    /// credentials, and hiding more when the URL does not parse.
    pub(super) fn shown(&self) -> String {
        match parse_servers(&self.url) {
            Ok(servers) => servers.shown,
            Err(_) => self.secrets().scrub(&redact(&self.url)),
        }
    }

    /// The subject that carries `topic` in this namespace.
    ///
    /// # Errors
    ///
    /// When the topic cannot be a subject: see the [module docs](super).
    pub fn subject(&self, topic: &Topic) -> Result<String, TransportError> {
        subject(&self.engine.namespace, topic)
    }

    /// Every spelling of every secret of the configuration: in the URL as
    /// a whole and in each of its servers, raw and decoded, and given apart.
    pub(super) fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::of(&self.url);
        for piece in self.url.split(',') {
            secrets = secrets.and(Secrets::of(piece.trim()));
            let rest = piece.split_once("://").map_or(piece, |(_, rest)| rest);
            if let Some(at) = rest.rfind('@') {
                let userinfo = &rest[..at];
                let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
                secrets = secrets.with(secret).with(&decode_userinfo(secret));
            }
            if let Some((_, query)) = piece.split_once('?') {
                for (key, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
                    if is_secret_query_key(key) {
                        secrets = secrets.with(value).with(&crate::net::percent_decode(value));
                    }
                }
            }
        }
        if let Ok(servers) = parse_servers(&self.url) {
            match &servers.credentials {
                Some(Credentials::UserPassword { password, .. }) => {
                    secrets = secrets.with(password)
                }
                Some(Credentials::Token(token)) => secrets = secrets.with(token),
                _ => {}
            }
        }
        match &self.credentials {
            Credentials::None => secrets,
            Credentials::UserPassword { password, .. } => secrets.with(password),
            Credentials::Token(token) => secrets.with(token),
        }
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            Credentials::None => "none".to_owned(),
            Credentials::UserPassword { user, .. } => format!("user {user}, password ***"),
            Credentials::Token(_) => "token ***".to_owned(),
        };
        let mut f = f.debug_struct("NatsConfig");
        f.field("url", &self.shown());
        self.engine.debug_fields(&mut f);
        f.field("credentials", &credentials)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("durable", &self.durable)
            .finish()
    }
}

/// The servers of a configured URL, as handed to the client: each without
/// user information (the client logs the addresses it connects to) nor
/// query pairs that may hold a secret, and the credentials they carried.
pub(super) struct Servers {
    pub(super) addresses: Vec<async_nats::ServerAddr>,
    pub(super) credentials: Option<Credentials>,
    /// The servers for `Debug`, errors and logs: `user:***@` or `***@`
    /// where credentials were.
    shown: String,
}

/// Query keys whose values are hidden and never handed to the client.
fn is_secret_query_key(key: &str) -> bool {
    let key = crate::net::percent_decode(key).to_ascii_lowercase();
    crate::net::is_secret_key(&key) || key == "token" || key == "auth_token"
}

/// `%XX` decoded; `+` kept (it is itself in user information).
fn decode_userinfo(text: &str) -> String {
    crate::net::percent_decode(&text.replace('+', "%2B"))
}

/// Parses `url`: one server address or several separated by `,` (blanks
/// around each ignored), each `[scheme://][user:password@ | token@]host[:port]`
/// and more as async-nats reads it (`nats://` when no scheme is written).
/// The error is a cause that shows no part of the URL.
pub(super) fn parse_servers(url: &str) -> Result<Servers, String> {
    let pieces: Vec<&str> = url.split(',').map(str::trim).collect();
    let count = pieces.len();
    let mut addresses = Vec::with_capacity(count);
    let mut shown = Vec::with_capacity(count);
    let mut credentials: Option<Credentials> = None;
    for (n, piece) in pieces.into_iter().enumerate() {
        let which = || {
            if count == 1 {
                "the server address".to_owned()
            } else {
                format!("server {} of {count}", n + 1)
            }
        };
        if piece.is_empty() {
            return Err(format!("{} is empty", which()));
        }
        let address: async_nats::ServerAddr = piece.parse().map_err(|error: std::io::Error| {
            format!(
                "{} is not a NATS server address ({error}; a `,` separates servers: \
                 write one in a password or token as %2C)",
                which()
            )
        })?;
        let mut parsed = address.into_inner();
        let user = decode_userinfo(parsed.username());
        let found = match parsed.password() {
            Some(password) => Some(Credentials::UserPassword {
                user: user.clone(),
                password: decode_userinfo(password),
            }),
            None if !user.is_empty() => Some(Credentials::Token(user.clone())),
            None => None,
        };
        if found.is_some()
            && (parsed.set_password(None).is_err() || parsed.set_username("").is_err())
        {
            return Err(format!("{} cannot hold user information", which()));
        }
        if let Some(query) = parsed.query() {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !is_secret_query_key(pair.split('=').next().unwrap_or_default()))
                .collect();
            let kept = kept.join("&");
            parsed.set_query((!kept.is_empty()).then_some(kept.as_str()));
        }
        let text = parsed.as_str().to_owned();
        shown.push(match (&found, text.split_once("://")) {
            (Some(Credentials::UserPassword { .. }), Some((scheme, rest))) => {
                format!("{scheme}://{user}:***@{rest}")
            }
            (Some(_), Some((scheme, rest))) => format!("{scheme}://***@{rest}"),
            _ => text.clone(),
        });
        let address = async_nats::ServerAddr::from_url(parsed)
            .map_err(|error| format!("{} is not a NATS server address ({error})", which()))?;
        addresses.push(address);
        match (&credentials, found) {
            (_, None) => {}
            (None, Some(found)) => credentials = Some(found),
            (Some(known), Some(found)) => {
                if *known != found {
                    return Err(
                        "the servers carry different credentials: the client has one set for \
                         all (give it with user_and_password or token)"
                            .to_owned(),
                    );
                }
            }
        }
    }
    Ok(Servers {
        addresses,
        credentials,
        shown: shown.join(","),
    })
}

/// Whether `token` can be one token of a subject.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && !token
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
}

pub(super) fn check_namespace(namespace: &str) -> Result<(), TransportError> {
    if namespace.split('.').all(is_token) {
        Ok(())
    } else {
        Err(TransportError::msg(format!(
            "the NATS namespace {namespace:?} is not a subject prefix: one or more \
             `.`-separated tokens without white space, `*` or `>`"
        ))
        .with_outcome(Outcome::NotSent))
    }
}

/// `<namespace>.<topic segments>`: see the module docs.
pub(super) fn subject(namespace: &str, topic: &Topic) -> Result<String, TransportError> {
    let text = topic.to_string();
    // No segment starts with `_`: the subjects of the transport's own use
    // (`<ns>._direct`, `<ns>._sync.<id>`) stay apart from every topic's,
    // whatever the namespace.
    let valid = text
        .split(':')
        .all(|segment| is_token(segment) && !segment.starts_with('_'));
    if !valid {
        return Err(TransportError::msg(format!(
            "topic {text:?} cannot be a NATS subject (a segment is empty, holds white \
             space, `.`, `*` or `>`, or starts with `_`)"
        ))
        .with_outcome(Outcome::NotSent));
    }
    Ok(format!("{namespace}.{}", text.replace(':', ".")))
}
