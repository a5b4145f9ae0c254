//! The request scope: the request ids that [`in_request`] and
//! [`in_requests`] set for the future they run, and that every record made
//! in it takes.

use std::collections::BTreeMap;

use super::{Event, Text};

tokio::task_local! {
    /// The request ids [`in_request`] and [`in_requests`] set for the
    /// task running them.
    static REQUEST: Scope;
}

/// A request's ids, as its audit records carry them: the one the service
/// made (`request`), and the one the client sent, if any (`client_request`,
/// recorded beside it, never in its place: a client cannot choose the id
/// the trail files its request under).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId {
    /// The service's id of the request.
    pub id: Text,
    /// The client's own id of it, if it sent one.
    pub client: Option<Text>,
}

impl From<Text> for RequestId {
    fn from(id: Text) -> Self {
        Self { id, client: None }
    }
}

/// The request ids in force in a task.
#[derive(Clone, Default)]
pub(super) struct Scope {
    /// The ids of every record made.
    request: Option<RequestId>,
    /// The ids of each record about one of these file versions (by file
    /// id and version).
    by_file: Option<std::sync::Arc<BTreeMap<(String, u64), RequestId>>>,
}

impl Scope {
    pub(super) fn request_of(&self, event: &Event) -> Option<RequestId> {
        let by_file = self
            .by_file
            .as_ref()
            .zip(event.file())
            .and_then(|(by_file, file)| {
                by_file.get(&(file.file.as_str().to_owned(), file.version))
            });
        by_file.or(self.request.as_ref()).cloned()
    }

    /// The scope of the running task, if it has one.
    pub(super) fn current() -> Option<Self> {
        REQUEST.try_with(Self::clone).ok()
    }
}

/// Runs `work` with `request` as the request id of every
/// [`Record`](super::Record) made in it
/// ([`Record::new`](super::Record::new) takes it), and returns its output.
/// `request` is a [`Text`] (the service's id) or a [`RequestId`] (with the
/// client's own id beside it).
///
/// This is how a service ties every audit record of one request to it —
/// the key release the key hierarchy records as much as the seal or open
/// the files API records — without handing the id to each layer: await the
/// request's work (`Files::seal`, `Files::open`, …) inside. The id belongs
/// to the future, wherever the runtime polls it; a task it spawns does not
/// inherit it (wrap that task's future too), and neither does a closure
/// run on the blocking pool. Scopes nest: the inner one wins inside it.
///
/// ```
/// use atrest_audit::{in_request, Event, Record, Text};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), atrest_audit::Error> {
/// let event = Event::Custom { kind: Text::new("ping")?, fields: Default::default() };
/// let actor = Text::new("service")?;
/// let record = in_request(Text::new("req-42")?, async { Record::new(actor, event) }).await;
/// assert_eq!(record.request.as_ref().map(Text::as_str), Some("req-42"));
/// # Ok(())
/// # }
/// ```
pub async fn in_request<F: Future>(request: impl Into<RequestId>, work: F) -> F::Output {
    let scope = Scope {
        request: Some(request.into()),
        by_file: None,
    };
    REQUEST.scope(scope, work).await
}

/// As [`in_request`] for work done for several requests at once (a batch
/// of uploads sharing their durable steps): a record about a file version
/// (its [`Event::file`]) whose file id and version are a key of `by_file`
/// gets that request's id; any other record the id of the enclosing scope,
/// if any.
pub async fn in_requests<F: Future>(
    by_file: BTreeMap<(String, u64), RequestId>,
    work: F,
) -> F::Output {
    let scope = Scope {
        request: Scope::current().and_then(|scope| scope.request),
        by_file: Some(std::sync::Arc::new(by_file)),
    };
    REQUEST.scope(scope, work).await
}
