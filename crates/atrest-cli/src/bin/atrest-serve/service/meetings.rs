//! Meetings: users of a tenant share content in a meeting, each item
//! sealed under its own random 256-bit file key; a participant's client
//! asks for an item's key, fetches its ciphertext, and decrypts it on its
//! side (`atrest meeting fetch`, or [`atrest::DeliveredKey::open`]).
//!
//! | request | who | answer |
//! |---|---|---|
//! | `POST /v1/tenants/{tenant}/meetings` with `{"participants": ["user@tenant", …]}` | a user of the tenant, who becomes the organiser | `201`, the meeting (`id`, `organiser`, `participants`) |
//! | `GET /v1/tenants/{tenant}/meetings/{id}` | the organiser, a participant | `200`, the meeting and its `items` |
//! | `PUT …/meetings/{id}/participants/{user@tenant}` | the organiser | `200`, the meeting |
//! | `DELETE …/meetings/{id}/participants/{user@tenant}` | the organiser | `200`, the meeting; no key is delivered to them afterwards |
//! | `PUT …/meetings/{id}/items/{name}` | the organiser, a participant | `201`: sealed as a file upload is |
//! | `GET …/meetings/{id}/keys/{name}[?version=N]` | the organiser, a participant | `200`, the item's delivered key ([`atrest::DeliveredKey`]'s wire form, `Cache-Control: no-store`) |
//! | `GET …/meetings/{id}/items/{name}?version=N` | the organiser, a participant | `200`, the item's ciphertext as stored |
//! | `DELETE /v1/tenants/{tenant}/meetings/{id}` | the organiser | `200`: the meeting ended, its items deleted and their keys erased shortly after; `404` once it is gone |
//!
//! Participants are users of the meeting's tenant (`user@tenant`). A
//! meeting is kept as files of its tenant under `.atrest-meetings/{id}/`:
//! its membership (organiser and participants) in one sealed file, written
//! only with a precondition on its newest version, and read again for
//! every request, so a removal holds on every instance at once. The file
//! routes refuse names under `.atrest-meetings/` and listings leave them
//! out: other users of the tenant cannot reach a meeting's items.
//!
//! Each delivery is audited twice, as a key release and as a delivery to
//! the participant (`file_key_delivered`); a refused one as
//! `release_denied`. The key is never logged. Ending a meeting marks it
//! ended (from then on it answers nothing but another `DELETE`, which
//! finishes an end an instance was killed in the middle of), deletes its
//! items, then its membership, and makes the deletions final (the tenant's
//! TIK rolled, its other keys re-wrapped, the old version retired): its
//! content is unreadable for everyone, the service included. An item whose
//! upload commits after the meeting was marked deletes itself. A participant who received an item's
//! key holds what decrypts that item's ciphertext: they could keep the key
//! and a copy of the ciphertext, or the plaintext itself. Ending the
//! meeting or removing them stops further deliveries, not what was
//! delivered.

use std::sync::Arc;

use atrest::tenant::Access;
use atrest::{MediaType, NewVersion, Precondition, WriterSink};
use atrest_deployment::{FileName, Principal};
use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, Caller, RequestId, Service, api_error};

mod items;
pub(super) use items::{ciphertext, key, upload_item};

/// Where a tenant's meetings are kept: the first part of their files'
/// names, which the file routes refuse.
pub(crate) const MEETINGS: &str = ".atrest-meetings";

/// Most participants in one meeting.
const MAX_PARTICIPANTS: usize = 1000;

/// Tries of a membership change that lost a race with another.
const TRIES: usize = 8;

/// Whether `name` is one the file routes leave to the meetings.
pub(crate) fn is_reserved(name: &str) -> bool {
    let name = atrest::normalize_name(name);
    name.split('/').next() == Some(MEETINGS)
}

/// Refuses a name under [`MEETINGS`] on the file routes.
pub(crate) fn refuse_reserved(name: &str) -> Result<(), ApiError> {
    if is_reserved(name) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "usage",
            format!("names under {MEETINGS}/ are the meetings'; use the meeting routes"),
        ));
    }
    Ok(())
}

/// A meeting's membership, as its sealed file holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    organiser: String,
    participants: Vec<String>,
    /// When it was created, in seconds since the Unix epoch.
    created: u64,
    /// Whether the organiser ended it: its items are being deleted, and
    /// nothing else is done with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
}

impl Membership {
    fn admits(&self, principal: &str) -> bool {
        self.organiser == principal || self.participants.iter().any(|p| p == principal)
    }
}

/// A meeting id: 32 lower-case hex digits (128 random bits).
fn check_id(id: &str) -> Result<(), ApiError> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such meeting",
        ))
    }
}

fn new_id() -> Result<String, ApiError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the random generator failed",
        )
    })?;
    Ok(hex::encode(bytes))
}

fn membership_name(id: &str) -> String {
    format!("{MEETINGS}/{id}/membership")
}

fn items_prefix(id: &str) -> String {
    format!("{MEETINGS}/{id}/items/")
}

/// A participant: `user@tenant` of the meeting's tenant.
fn check_participant(tenant: &str, principal: &str) -> Result<(), ApiError> {
    let usage = |why: String| ApiError::new(StatusCode::BAD_REQUEST, "usage", why);
    match Principal::parse(principal) {
        Some(parsed) if parsed.tenant == tenant => {}
        _ => {
            return Err(usage(format!(
                "participants are users of tenant {tenant:?}, written user@{tenant}"
            )));
        }
    }
    if principal.len() > 256
        || principal
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(usage(
            "a participant's name is at most 256 characters, without spaces or control characters"
                .into(),
        ));
    }
    Ok(())
}

/// "No such meeting" (or none any more).
fn no_meeting() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such meeting")
}

/// The meeting `id` of `tenant` and its membership version, read for
/// `caller` (a user of the tenant: the membership policy lets them read
/// it; who may do what is decided here). A meeting being ended is no
/// meeting any more.
async fn load(
    service: &Service,
    request: &RequestId,
    caller: &Access<'_>,
    meeting: (&str, &str),
) -> Result<(Membership, u64), ApiError> {
    let (membership, version) = load_any(service, request, caller, meeting).await?;
    if membership.ended {
        return Err(no_meeting());
    }
    Ok((membership, version))
}

/// [`load`], a meeting being ended included.
async fn load_any(
    service: &Service,
    request: &RequestId,
    caller: &Access<'_>,
    (tenant, id): (&str, &str),
) -> Result<(Membership, u64), ApiError> {
    check_id(id)?;
    let name = membership_name(id);
    let file = FileName {
        tenant,
        name: &name,
        version: None,
    };
    let mut sink = WriterSink(Vec::new());
    let record = match service.deployment.get(caller, &file, None, &mut sink).await {
        Ok(record) => record,
        Err(error) if error.kind() == atrest::ErrorKind::NotFound => return Err(no_meeting()),
        Err(error) => return Err(ApiError::from_deployment(&error, request)),
    };
    let membership = serde_json::from_slice(&sink.0)
        .map_err(|e| ApiError::internal(&format!("meeting {id}: its membership: {e}"), request))?;
    Ok((membership, u64::from(record.version)))
}

/// Writes the membership of meeting `id`: a new version if `after` is the
/// newest one (`None`: only if there is none yet).
async fn save(
    service: &Service,
    request: &RequestId,
    caller: &Caller,
    (tenant, id): (&str, &str),
    membership: &Membership,
    after: Option<u64>,
) -> Result<bool, ApiError> {
    let bytes = serde_json::to_vec(membership)
        .map_err(|e| ApiError::internal(&format!("meeting {id}: {e}"), request))?;
    let precondition = match after {
        None => Precondition::Absent,
        Some(version) => Precondition::NewestAmong(
            atrest::filekey::FileVersion::try_from(version)
                .ok()
                .into_iter()
                .collect(),
        ),
    };
    let version = NewVersion {
        media_type: MediaType::new("application/json").ok(),
        precondition,
    };
    let saved = service
        .deployment
        .put_version(
            &caller.access(),
            tenant,
            &membership_name(id),
            bytes.as_slice(),
            &version,
        )
        .await;
    match saved {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == atrest::ErrorKind::Conflict => Ok(false),
        Err(error) => Err(ApiError::from_deployment(&error, request)),
    }
}

/// The meeting as its organiser and participants see it.
fn shown(id: &str, membership: &Membership, items: Option<Vec<Item>>) -> serde_json::Value {
    let mut shown = serde_json::json!({
        "id": id,
        "organiser": membership.organiser,
        "participants": membership.participants,
        "created": membership.created,
    });
    if let (Some(items), Some(object)) = (items, shown.as_object_mut()) {
        object.insert("items".into(), serde_json::json!(items));
    }
    shown
}

/// One item of a meeting.
#[derive(Debug, Serialize)]
struct Item {
    name: String,
    version: u64,
    bytes: u64,
}

/// `POST /v1/tenants/{tenant}/meetings`: a new meeting, its organiser the
/// caller.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewMeeting {
    #[serde(default)]
    participants: Vec<String>,
}

pub(super) async fn create(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path(tenant): Path<String>,
    Json(asked): Json<NewMeeting>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    let mut participants = Vec::new();
    for participant in asked.participants {
        check_participant(&tenant, &participant)?;
        if participant != caller.principal && !participants.contains(&participant) {
            participants.push(participant);
        }
    }
    if participants.len() > MAX_PARTICIPANTS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "usage",
            format!("at most {MAX_PARTICIPANTS} participants"),
        ));
    }
    let membership = Membership {
        organiser: caller.principal.clone(),
        participants,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        ended: false,
    };
    let id = new_id()?;
    if !save(
        &service,
        &request,
        &caller,
        (&tenant, &id),
        &membership,
        None,
    )
    .await?
    {
        return Err(ApiError::internal("a new meeting's id was taken", &request));
    }
    Ok((StatusCode::CREATED, Json(shown(&id, &membership, None))).into_response())
}

/// Refuses a caller who is not the organiser.
fn organiser_only(membership: &Membership, caller: &Caller) -> Result<(), ApiError> {
    if membership.organiser == caller.principal {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "refused",
            "only the meeting's organiser may do that",
        ))
    }
}

/// Refuses a caller who is neither the organiser nor a participant.
fn members_only(membership: &Membership, caller: &Caller) -> Result<(), ApiError> {
    if membership.admits(&caller.principal) {
        Ok(())
    } else {
        Err(not_a_participant())
    }
}

fn not_a_participant() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "refused",
        "not a participant of this meeting",
    )
}

/// The items of meeting `id`: the newest version of each.
async fn items(
    service: &Service,
    request: &RequestId,
    (tenant, id): (&str, &str),
) -> Result<Vec<Item>, ApiError> {
    let prefix = items_prefix(id);
    let listed = api_error(service.deployment.list(Some(tenant)).await, request)?;
    let listed = listed
        .into_iter()
        .filter(|listing| listing.name.starts_with(&prefix))
        .collect();
    Ok(atrest_deployment::newest_of_each(listed)
        .into_iter()
        .map(|listing| Item {
            name: listing
                .name
                .get(prefix.len()..)
                .unwrap_or_default()
                .to_owned(),
            version: listing.version,
            bytes: listing.bytes,
        })
        .collect())
}

/// `GET /v1/tenants/{tenant}/meetings/{id}`.
pub(super) async fn show(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    let (membership, _) = load(&service, &request, &caller.access(), (&tenant, &id)).await?;
    members_only(&membership, &caller)?;
    let items = items(&service, &request, (&tenant, &id)).await?;
    Ok(Json(shown(&id, &membership, Some(items))).into_response())
}

/// `PUT` and `DELETE …/participants/{principal}`: the organiser adds or
/// removes a participant, retried while other changes win the race.
async fn change_participant(
    service: &Arc<Service>,
    request: &RequestId,
    caller: &Caller,
    (tenant, id, participant): (&str, &str, &str),
    add: bool,
) -> Result<Response, ApiError> {
    caller.check_tenant(service, tenant, request).await?;
    check_participant(tenant, participant)?;
    for _ in 0..TRIES {
        let (mut membership, version) =
            load(service, request, &caller.access(), (tenant, id)).await?;
        organiser_only(&membership, caller)?;
        let present = membership.participants.iter().any(|p| p == participant);
        if add == present || (add && participant == membership.organiser) {
            return Ok(Json(shown(id, &membership, None)).into_response());
        }
        if add {
            if membership.participants.len() >= MAX_PARTICIPANTS {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("the meeting has {MAX_PARTICIPANTS} participants already"),
                ));
            }
            membership.participants.push(participant.to_owned());
        } else {
            membership.participants.retain(|p| p != participant);
        }
        if save(
            service,
            request,
            caller,
            (tenant, id),
            &membership,
            Some(version),
        )
        .await?
        {
            return Ok(Json(shown(id, &membership, None)).into_response());
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        "the meeting's membership kept changing; try again",
    ))
}

/// `PUT` (add) and `DELETE` (remove) `…/participants/{principal}`.
pub(super) async fn participant(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    method: axum::http::Method,
    Path((tenant, id, participant)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let add = method == axum::http::Method::PUT;
    change_participant(
        &service,
        &request,
        &caller,
        (&tenant, &id, &participant),
        add,
    )
    .await
}

/// `DELETE /v1/tenants/{tenant}/meetings/{id}`: the organiser ends the
/// meeting. Its items and membership are deleted, and the deletions made
/// final shortly after (a crypto-erasure of the tenant's deleted keys).
pub(super) async fn end(
    State(service): State<Arc<Service>>,
    Extension(request): Extension<RequestId>,
    caller: Caller,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    caller.check_tenant(&service, &tenant, &request).await?;
    let access = caller.access();
    // Marked ended first: from then on no key is delivered and no item
    // stored, on any instance. A marked meeting is ended again (by a
    // second request, or after an instance was killed halfway).
    let mut marked = false;
    for _ in 0..TRIES {
        let (mut membership, version) =
            load_any(&service, &request, &access, (&tenant, &id)).await?;
        organiser_only(&membership, &caller)?;
        if membership.ended {
            marked = true;
            break;
        }
        membership.ended = true;
        if save(
            &service,
            &request,
            &caller,
            (&tenant, &id),
            &membership,
            Some(version),
        )
        .await?
        {
            marked = true;
            break;
        }
    }
    if !marked {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the meeting's membership kept changing; try again",
        ));
    }
    let mut deleted = 0_usize;
    let mut delete = async |name: &str| -> Result<(), ApiError> {
        let file = FileName {
            tenant: &tenant,
            name,
            version: None,
        };
        match service.deployment.delete(&access, &file).await {
            Ok(versions) => deleted += versions.len(),
            // Deleted meanwhile (the meeting ended twice at once).
            Err(error) if error.kind() == atrest::ErrorKind::NotFound => {}
            Err(error) => return Err(ApiError::from_deployment(&error, &request)),
        }
        Ok(())
    };
    let prefix = items_prefix(&id);
    for item in items(&service, &request, (&tenant, &id)).await? {
        delete(&format!("{prefix}{}", item.name)).await?;
    }
    // The membership last: while it is there, ending the meeting again
    // finds what is left.
    delete(&membership_name(&id)).await?;
    service.eraser.erase_soon(&tenant);
    let answer = serde_json::json!({
        "ended": id,
        "deleted_versions": deleted,
        "erasure": "scheduled",
    });
    Ok((StatusCode::OK, Json(answer)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meeting_names_are_reserved_in_every_spelling() {
        assert!(is_reserved(".atrest-meetings/0123/items/a"));
        assert!(is_reserved(".atrest-meetings"));
        assert!(!is_reserved("atrest-meetings/x"));
        assert!(!is_reserved("notes/.atrest-meetings/x"));
        assert!(!is_reserved(".atrest-meetingsx/y"));
    }

    #[test]
    fn participants_are_users_of_the_tenant() {
        assert!(check_participant("contoso", "bob@contoso").is_ok());
        for bad in [
            "bob@fabrikam",
            "bob",
            "@contoso",
            "bob@contoso@x",
            "b ob@contoso",
        ] {
            assert!(check_participant("contoso", bad).is_err(), "{bad}");
        }
        assert!(check_id(&"a".repeat(32)).is_ok());
        for bad in ["", "A".repeat(32).as_str(), "a".repeat(31).as_str(), "../x"] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }
}
