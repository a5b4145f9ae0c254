//! The commands about tenants and their keys: key services, tenants
//! (made, shown, their fallback policy and outage windows), rotation,
//! revocation and purge; and what they tell about running instances.

use std::path::Path;

use atrest::tenant::{FallbackPolicy, OutageWindow, RootKeyRef};
use atrest_deployment::{AwsKmsConfig, KmsConfig, TenantKeys, TokenConfig};

use super::open;
use crate::cli::{FallbackArg, KmsCommand, RotateCommand, TenantCommand};
use crate::exit::Error;
use crate::output::Output;

/// `atrest kms`.
pub(crate) async fn kms(data: &Path, out: Output, command: KmsCommand) -> Result<(), Error> {
    let mut deployment = open(data).await?;
    match command {
        KmsCommand::Add {
            name,
            aws,
            address,
            mount,
            token_env,
            token_file,
            endpoint,
            credentials_file,
            ca_file,
            timeout,
        } => {
            let timeout_ms =
                timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
            let absolute = |file: Option<std::path::PathBuf>, flag: &str| {
                file.map(|file| std::path::absolute(&file))
                    .transpose()
                    .map_err(|e| Error::usage(format!("{flag}: {e}")))
            };
            let ca_file = absolute(ca_file, "--ca-file")?;
            if aws {
                let kms = AwsKmsConfig {
                    name,
                    endpoint,
                    credentials_file: absolute(credentials_file, "--credentials-file")?,
                    ca_file,
                    timeout_ms,
                };
                deployment.add_aws_kms(kms.clone()).await?;
                out.show(&kms, || {
                    format!(
                        "added AWS KMS as {} ({}); name its keys as {}:arn:aws:kms:REGION:ACCOUNT:key/KEY-ID",
                        kms.name,
                        kms.endpoint.as_deref().unwrap_or("the regional endpoints"),
                        kms.name
                    )
                });
                return Ok(());
            }
            let (Some(address), mount) = (address, mount.unwrap_or_else(|| "transit".into()))
            else {
                return Err(Error::usage("--address is required (or --aws)"));
            };
            let kms = KmsConfig {
                name,
                address,
                mount,
                token_env,
                token_file,
                ca_file,
                timeout_ms,
            };
            deployment.add_kms(kms.clone()).await?;
            out.show(&kms, || {
                format!(
                    "added key service {} ({}, mount {}); name its keys as {}:KEY@VERSION",
                    kms.name, kms.address, kms.mount, kms.name
                )
            });
        }
        KmsCommand::List => {
            let transit = deployment.kms().to_vec();
            let aws = deployment.aws_kms().to_vec();
            out.show(
                &serde_json::json!({ "transit": transit, "aws": aws }),
                || {
                    let transit = transit
                        .iter()
                        .map(|k| format!("{}\ttransit\t{}\t{}", k.name, k.address, k.mount));
                    let aws = aws.iter().map(|k| {
                        format!(
                            "{}\taws-kms\t{}",
                            k.name,
                            k.endpoint.as_deref().unwrap_or("regional endpoints")
                        )
                    });
                    transit.chain(aws).collect::<Vec<_>>().join("\n")
                },
            );
        }
        KmsCommand::CreateKey { name, key } => {
            let created = deployment.create_kms_key(&name, &key).await?;
            let text = created.to_string();
            out.show(&serde_json::json!({ "key": text }), || {
                format!("created {text}")
            });
        }
    }
    Ok(())
}

/// `atrest tenant …`.
pub(crate) async fn tenant(data: &Path, out: Output, command: TenantCommand) -> Result<(), Error> {
    let mut deployment = open(data).await?;
    match command {
        TenantCommand::Create {
            name,
            customer_key,
            module,
            token_a,
            token_b,
            key_a,
            key_b,
            provider_a,
            provider_b,
            pin_env,
            generate,
            customer_keys,
        } => {
            if !matches!(customer_keys.len(), 0 | 2) {
                return Err(Error::usage(
                    "--customer-keys takes two root-key references, PROVIDER:KEY@VERSION, comma-separated",
                ));
            }
            let keys = if let [a, b] = customer_keys.as_slice() {
                let parse = |text: &String| {
                    text.parse::<RootKeyRef>()
                        .map_err(|e| Error::usage(format!("--customer-keys: {e}")))
                };
                TenantKeys::CustomerKeyAt {
                    keys: [parse(a)?, parse(b)?],
                }
            } else if customer_key {
                let (Some(module), Some(token_a), Some(token_b), Some(key_a), Some(key_b)) =
                    (module, token_a, token_b, key_a, key_b)
                else {
                    return Err(Error::usage(
                        "--customer-key needs --module, --token-a, --token-b, --key-a and --key-b",
                    ));
                };
                let token = |name: String, token: String| TokenConfig {
                    name,
                    module: module.clone(),
                    token,
                    pin_env: pin_env.clone(),
                };
                TenantKeys::CustomerKey {
                    keys: Box::new([
                        (token(provider_a, token_a), key_a),
                        (token(provider_b, token_b), key_b),
                    ]),
                    generate,
                }
            } else {
                TenantKeys::ServiceManaged
            };
            let summary = deployment.create_tenant(&name, &keys).await?;
            out.show(&summary, || {
                format!(
                    "created tenant {} ({}), root keys: {}",
                    summary.name,
                    summary.kind,
                    summary.root_keys.join(", ")
                )
            });
        }
        TenantCommand::List => {
            let tenants = deployment.tenants().await?;
            out.show(&tenants, || {
                tenants
                    .iter()
                    .map(|t| {
                        format!(
                            "{:<16} {:<16} {:<7} TIK {}",
                            t.name, t.kind, t.state, t.current_tik
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TenantCommand::TagNames => {
            let tagged = deployment.tag_untagged_names().await?;
            let info = serde_json::json!({ "tagged": tagged });
            out.show(&info, || {
                if tagged.is_empty() {
                    "every tenant name has its tag".to_owned()
                } else {
                    format!(
                        "tagged {} tenant names: {}",
                        tagged.len(),
                        tagged.join(", ")
                    )
                }
            });
        }
        TenantCommand::Fallback { name, policy } => {
            let policy = match policy {
                FallbackArg::Automatic => FallbackPolicy::Automatic,
                FallbackArg::Declared => FallbackPolicy::Declared(None),
                FallbackArg::Never => FallbackPolicy::Never,
            };
            deployment
                .set_fallback_policy(&name, policy.clone())
                .await?;
            let info = serde_json::json!({ "tenant": name, "fallback": policy.name() });
            out.show(&info, || {
                format!(
                    "{name}: fallback policy {}.\n{}",
                    policy.name(),
                    running_instances_note()
                )
            });
        }
        TenantCommand::Outage {
            name,
            duration,
            from,
            reason,
            end,
        } => {
            let summary = deployment.tenant_summary(&name).await?;
            if summary.fallback.as_deref() != Some("declared") {
                return Err(Error::usage(format!(
                    "{name}'s fallback policy is {}: outage windows are for the `declared` \
                     policy (atrest tenant fallback {name} declared)",
                    summary
                        .fallback
                        .as_deref()
                        .unwrap_or("none (service-managed)")
                )));
            }
            let window = match (end, duration, reason) {
                (true, _, _) => None,
                (false, Some(duration), Some(reason)) => {
                    let start = from.unwrap_or_else(std::time::SystemTime::now);
                    let seconds = |time: std::time::SystemTime| {
                        time.duration_since(std::time::UNIX_EPOCH)
                            .map(|since| since.as_secs())
                            .map_err(|_| Error::usage("the window begins before 1970"))
                    };
                    let start = seconds(start)?;
                    Some(OutageWindow {
                        start,
                        end: start.saturating_add(duration.as_secs().max(1)),
                        reason,
                    })
                }
                _ => return Err(Error::usage("give --for and --reason, or --end")),
            };
            deployment
                .set_fallback_policy(&name, FallbackPolicy::Declared(window.clone()))
                .await?;
            let info = serde_json::json!({
                "tenant": name,
                "outage": window.as_ref().map(|w| serde_json::json!({
                    "start": w.start, "end": w.end, "reason": w.reason,
                })),
            });
            out.show(&info, || match &window {
                Some(w) => format!(
                    "{name}: outage declared from {} to {} ({}); its users are served \
                     through the availability key meanwhile, while its customer keys are \
                     unavailable.\n{}",
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(w.start)
                    ),
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(w.end)
                    ),
                    w.reason,
                    running_instances_note()
                ),
                None => format!("{name}: outage window ended.\n{}", running_instances_note()),
            });
        }
        TenantCommand::AcceptRestored { id } => {
            let summary = deployment.accept_restored_record(id).await?;
            out.show(&summary, || {
                format!(
                    "{} ({id}): its record is accepted as the database holds it: {} tenant, TIK {}, \
                     root keys {}{}.\n{}",
                    summary.name,
                    summary.kind,
                    summary.current_tik,
                    summary.root_keys.join(", "),
                    summary
                        .fallback
                        .as_ref()
                        .map(|fallback| format!(", fallback policy {fallback}"))
                        .unwrap_or_default(),
                    running_instances_note()
                )
            });
        }
        TenantCommand::Show { name } => {
            let summary = deployment.tenant_summary(&name).await?;
            out.show(&summary, || {
                let versions: Vec<String> = summary
                    .tik_versions
                    .iter()
                    .map(|v| {
                        format!(
                            "{}{}: {} file keys",
                            v.version,
                            if v.current { " (current)" } else { " (kept)" },
                            v.file_keys
                        )
                    })
                    .collect();
                let mut text = format!(
                    "tenant {}\n  id           {}\n  kind         {}\n  state        {}\n  current TIK  {}\n  TIK versions {}\n  root keys    {}",
                    summary.name,
                    summary.id,
                    summary.kind,
                    summary.state,
                    summary.current_tik,
                    versions.join("\n               "),
                    summary.root_keys.join("\n               ")
                );
                if let Some(fallback) = &summary.fallback {
                    text.push_str(&format!("\n  fallback     {fallback}"));
                    if let Some(outage) = &summary.outage {
                        text.push_str(&format!(
                            " (outage {} to {}, {}: {})",
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(outage.start)
                            ),
                            humantime::format_rfc3339_seconds(
                                std::time::UNIX_EPOCH + std::time::Duration::from_secs(outage.end)
                            ),
                            if outage.open { "open now" } else { "not open now" },
                            outage.reason
                        ));
                    }
                }
                if summary.rotation_unfinished {
                    text.push_str(&format!(
                        "\n  a rotation has not finished: file keys are still wrapped under older versions; run `atrest rotate tik {}` again",
                        summary.name
                    ));
                }
                text
            });
        }
    }
    Ok(())
}

/// `atrest rotate …`.
pub(crate) async fn rotate(data: &Path, out: Output, command: RotateCommand) -> Result<(), Error> {
    let deployment = open(data).await?;
    match command {
        RotateCommand::Tik { tenant } => {
            let bar = out.count_bar(0, "file keys re-wrapped");
            let rotated = deployment
                .rotate_tik(&tenant, &mut |progress| {
                    bar.set_length(progress.total);
                    bar.set_position(progress.done);
                })
                .await;
            bar.finish_and_clear();
            let (version, report, retired) = rotated?;
            let retired: Vec<u32> = retired.into_iter().map(u32::from).collect();
            let info = serde_json::json!({
                "tenant": tenant,
                "tik_version": u32::from(version),
                "rewrapped": report.rewrapped,
                "batches": report.batches,
                "retired": retired,
                "running_instances_follow_within_s": CHANGE_NOTE_SECS,
            });
            out.show(&info, || {
                format!(
                    "{tenant}: TIK version {version} is current; {} file keys re-wrapped in {} batches; versions {retired:?} retired.\n{}",
                    report.rewrapped,
                    report.batches,
                    running_instances_note()
                )
            });
        }
        RotateCommand::RootKey { availability } => {
            let label = if availability { "availability" } else { "root" };
            let (key, report) = deployment.rotate_service_key(label).await?;
            let info = serde_json::json!({
                "root_key": key.to_string(),
                "tenants": report.tenants,
                "tik_versions": report.tik_versions,
            });
            out.show(&info, || {
                format!(
                    "rolled to {key}: {} TIK versions of {} tenants re-wrapped; the old version is destroyed",
                    report.tik_versions, report.tenants
                )
            });
        }
    }
    Ok(())
}

/// `atrest revoke`.
pub(crate) async fn revoke(data: &Path, out: Output, tenant: &str, key: &str) -> Result<(), Error> {
    let deployment = open(data).await?;
    deployment.revoke(tenant, key).await?;
    let summary = deployment.tenant_summary(tenant).await?;
    let info = serde_json::json!({
        "tenant": tenant,
        "revoked": key,
        "state": summary.state,
        "revoked_keys": summary.revoked_keys,
        "running_instances_stop_within_s": CHANGE_NOTE_SECS,
    });
    out.show(&info, || {
        format!(
            "{tenant}: {key} recorded as revoked; the tenant is now {}.\n{}",
            summary.state,
            running_instances_note()
        )
    });
    Ok(())
}

/// How long a running instance (`atrest-serve`) takes to see a key change
/// made here, at most: the interval between its looks at the store's
/// change log (one second), and the look's own time, well below another.
const CHANGE_NOTE_SECS: u64 = 2 * atrest::tenant::DEFAULT_CHANGE_POLL.as_secs();

/// What a key change made here means for instances already running.
fn running_instances_note() -> String {
    format!(
        "Running instances (atrest-serve) follow this change within {CHANGE_NOTE_SECS} s \
         (they look at the key metadata's change log every second)."
    )
}

/// `atrest purge`.
pub(crate) async fn purge(data: &Path, out: Output, tenant: &str, yes: bool) -> Result<(), Error> {
    if !yes {
        return Err(Error::usage(format!(
            "purging destroys every key of {tenant:?} and cannot be undone: add --yes"
        )));
    }
    let destroyed = open(data).await?.purge(tenant).await?;
    let info = serde_json::json!({ "tenant": tenant, "tik_versions_destroyed": destroyed });
    out.show(&info, || {
        format!(
            "{tenant}: purged; {destroyed} TIK versions destroyed, every file of the tenant is unreadable"
        )
    });
    Ok(())
}
