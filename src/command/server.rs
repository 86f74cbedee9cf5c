//! Server commands: COMMAND, INFO, TIME, CONFIG GET, DBSIZE, SHUTDOWN.

use std::fmt::Write as _;

use bytes::Bytes;

use super::connection::{help_reply, REDIS_COMPAT_VERSION};
use super::spec::Arg;
use super::{dispatch_sub, lookup, parse, table, Action, CommandError, CommandSpec, Ctx};
use crate::metrics;
use crate::protocol::Reply;

/// `COMMAND`: info on every command.
pub fn command(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() == 1 {
        return Ok(Reply::Array(table::COMMANDS.iter().map(command_info).collect()).into());
    }
    dispatch_sub(ctx, &table::COMMAND, args)
}

/// `COMMAND COUNT`.
pub fn command_count(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(Reply::Integer(table::COMMANDS.len() as i64).into())
}

/// `COMMAND LIST`.
pub fn command_list(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let pattern = match &args[2..] {
        [] => None,
        [filterby, kind, p] if parse::is(filterby, "FILTERBY") && parse::is(kind, "PATTERN") => {
            Some(p)
        }
        _ => return Err(CommandError::Syntax),
    };
    let names = table::COMMANDS
        .iter()
        .filter(|c| pattern.is_none_or(|p| crate::glob::matches(p, c.name.as_bytes(), true)))
        .map(|c| Reply::bulk_static(c.name))
        .collect();
    Ok(Reply::Array(names).into())
}

/// `COMMAND INFO [name ...]`.
pub fn command_info_cmd(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    if args.len() == 2 {
        return Ok(Reply::Array(table::COMMANDS.iter().map(command_info).collect()).into());
    }
    let items = args[2..]
        .iter()
        .map(|n| find(n).map_or(Reply::Nil, command_info))
        .collect();
    Ok(Reply::Array(items).into())
}

/// `COMMAND DOCS [name ...]`.
pub fn command_docs(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let specs: Vec<&CommandSpec> = if args.len() == 2 {
        table::COMMANDS.iter().collect()
    } else {
        args[2..].iter().filter_map(|n| find(n)).collect()
    };
    let docs = specs
        .into_iter()
        .map(|c| (Reply::bulk_static(c.name), command_doc(c)))
        .collect();
    Ok(Reply::Map(docs).into())
}

/// `COMMAND HELP`.
pub fn command_help(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(help_reply("COMMAND", &table::COMMAND))
}

/// A command by its name, or a subcommand by `container|sub`.
fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    match name.iter().position(|&c| c == b'|') {
        Some(i) => super::lookup_sub(lookup(&name[..i])?, &name[i + 1..]),
        None => lookup(name),
    }
}

fn simple_set(items: &[&'static str]) -> Reply {
    Reply::Set(items.iter().map(|s| Reply::Simple((*s).into())).collect())
}

fn command_info(c: &'static CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::bulk_static(c.name),
        Reply::Integer(i64::from(c.arity)),
        simple_set(c.flags),
        Reply::Integer(i64::from(c.first_key)),
        Reply::Integer(i64::from(c.last_key)),
        Reply::Integer(i64::from(c.key_step)),
        simple_set(c.acl_categories),
        Reply::Array(vec![]),
        Reply::Array(vec![]),
        Reply::Array(c.subcommands.iter().map(command_info).collect()),
    ])
}

fn command_doc(c: &'static CommandSpec) -> Reply {
    let mut doc = vec![
        (Reply::bulk_static("summary"), Reply::bulk_static(c.summary)),
        (Reply::bulk_static("since"), Reply::bulk_static(c.since)),
        (Reply::bulk_static("group"), Reply::bulk_static(c.group)),
    ];
    if !c.args.is_empty() {
        doc.push((
            Reply::bulk_static("arguments"),
            Reply::Array(c.args.iter().map(arg_doc).collect()),
        ));
    }
    if !c.subcommands.is_empty() {
        let subs = c
            .subcommands
            .iter()
            .map(|s| (Reply::bulk_static(s.name), command_doc(s)))
            .collect();
        doc.push((Reply::bulk_static("subcommands"), Reply::Map(subs)));
    }
    Reply::Map(doc)
}

fn arg_doc(a: &'static Arg) -> Reply {
    let mut doc = vec![
        (Reply::bulk_static("name"), Reply::bulk_static(a.name)),
        (Reply::bulk_static("type"), Reply::bulk_static(a.kind)),
    ];
    if a.kind != "pure-token" && a.kind != "oneof" && a.kind != "block" {
        doc.push((
            Reply::bulk_static("display_text"),
            Reply::bulk_static(a.name),
        ));
    }
    if let Some(token) = a.token {
        doc.push((Reply::bulk_static("token"), Reply::bulk_static(token)));
    }
    if !a.flags.is_empty() {
        let flags = a.flags.iter().map(|f| Reply::Simple((*f).into())).collect();
        doc.push((Reply::bulk_static("flags"), Reply::Array(flags)));
    }
    if !a.args.is_empty() {
        doc.push((
            Reply::bulk_static("arguments"),
            Reply::Array(a.args.iter().map(arg_doc).collect()),
        ));
    }
    Reply::Map(doc)
}

/// Sections plain `INFO` shows, in order.
const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "commandstats",
    "errorstats",
    "flagstaff",
    "keyspace",
];

/// Sections only `INFO all`, `INFO everything` or their own name show (as
/// in Redis, per-command counters are long).
const NOT_DEFAULT: &[&str] = &["commandstats"];

/// `INFO [section ...]`.
pub fn info(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let wanted: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.iter().any(|w| w == "all" || w == "everything");
    let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let mut text = String::new();
    for section in DEFAULT_SECTIONS {
        if all || (default && !NOT_DEFAULT.contains(section)) || wanted.iter().any(|w| w == section)
        {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            info_section(ctx, section, &mut text);
        }
    }
    Ok(Reply::Verbatim(text.into()).into())
}

fn info_section(ctx: &Ctx<'_>, section: &str, out: &mut String) {
    let st = ctx.state;
    let s = &st.settings;
    let uptime = st.started.elapsed().as_secs();
    let now = crate::clock::since_epoch();
    let counts = st.store.counts();
    let rss = metrics::rss_bytes();
    let _ = match section {
        "server" => write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\nflagstaff_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            st.run_id,
            s.port,
            now.as_micros(),
            uptime / 86400,
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            s.config_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        ),
        "clients" => write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\npubsub_clients:{}\r\n",
            st.clients.count(),
            s.maxclients,
            st.clients.blocked_count(),
            st.hub.subscriber_count()
        ),
        "memory" => {
            let _ = out.write_str("# Memory\r\n");
            // Bytes allocated and live, as Redis counts them; absent when the
            // binary did not install the counting allocator (library use).
            if let Some(used) = metrics::alloc::allocated_bytes() {
                let _ = write!(
                    out,
                    "used_memory:{used}\r\nused_memory_human:{}\r\n",
                    human_bytes(used)
                );
            }
            write!(
                out,
                "used_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n",
                human_bytes(rss)
            )
        }
        "persistence" => {
            let (wal_bytes, state_bytes, log_entries) = st
                .raft
                .get()
                .map(|n| {
                    let (w, s) = n.disk_bytes();
                    (w, s, n.log_entries())
                })
                .unwrap_or_default();
            let disk = &metrics::STORAGE;
            write!(
                out,
                "# Persistence\r\nloading:{}\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:1\r\naof_fsync:{}\r\nwal_bytes:{wal_bytes}\r\nstate_bytes:{state_bytes}\r\nlog_entries:{log_entries}\r\nsnapshot_every:{}\r\nwal_fsyncs:{}\r\nwal_fsync_usec:{}\r\nwal_batches:{}\r\nwal_batched_records:{}\r\nsnapshots:{}\r\nsnapshot_usec:{}\r\n",
                u8::from(st.is_loading()),
                fsync_name(s.fsync),
                s.snapshot_every,
                disk.wal_fsync.count(),
                disk.wal_fsync.sum(),
                disk.wal_batch.count(),
                disk.wal_batch.sum(),
                metrics::get(&disk.snapshots),
                disk.snapshot_duration.sum(),
            )
        }
        "stats" => {
            let rates = st.stats.rates();
            write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ninstantaneous_input_kbps:{:.2}\r\ninstantaneous_output_kbps:{:.2}\r\nrejected_connections:{}\r\ntotal_error_replies:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\nclient_output_buffer_limit_disconnections:{}\r\nprotocol_errors:{}\r\nflag_evaluations:{}\r\nwrites_applied:{}\r\nacl_access_denied_auth:{}\r\nacl_access_denied_cmd:{}\r\nacl_access_denied_key:{}\r\nacl_access_denied_channel:{}\r\n",
            metrics::get(&st.stats.connections_received),
            metrics::get(&st.stats.commands_processed),
            rates.ops.per_sec(),
            metrics::get(&st.stats.net_input_bytes),
            metrics::get(&st.stats.net_output_bytes),
            rates.input.per_sec() as f64 / 1024.0,
            rates.output.per_sec() as f64 / 1024.0,
            metrics::get(&st.stats.rejected_connections),
            metrics::get(&st.stats.error_replies),
            st.hub.channels(None).len(),
            st.hub.numpat(),
            metrics::get(&st.hub.disconnected),
            metrics::get(&st.stats.protocol_errors),
            metrics::get(&st.stats.evaluations),
            metrics::get(&metrics::STORAGE.writes_applied),
            metrics::get(&st.stats.acl_denied_auth),
            metrics::get(&st.stats.acl_denied_cmd),
            metrics::get(&st.stats.acl_denied_key),
            metrics::get(&st.stats.acl_denied_channel),
        )
        }
        "replication" => write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_repl_offset:{}\r\nstale:{}\r\n",
            st.run_id, counts.revision, u8::from(st.is_stale())
        ),
        "cpu" => {
            let _ = out.write_str("# CPU\r\n");
            match metrics::cpu_seconds() {
                Some((sys, user)) => write!(
                    out,
                    "used_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\n"
                ),
                None => Ok(()),
            }
        }
        "commandstats" => {
            let _ = out.write_str("# Commandstats\r\n");
            for (name, c) in super::SLOT_NAMES.iter().zip(&st.stats.commands) {
                let calls = metrics::get(&c.calls);
                let (rejected, failed) = (metrics::get(&c.rejected), metrics::get(&c.failed));
                if calls + rejected == 0 {
                    continue;
                }
                let usec = metrics::get(&c.nanos) / 1000;
                let per_call = if calls > 0 {
                    usec as f64 / calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n"
                );
            }
            Ok(())
        }
        "errorstats" => {
            let _ = out.write_str("# Errorstats\r\n");
            for (kind, n) in st.stats.errors.snapshot() {
                let _ = write!(out, "errorstat_{kind}:count={n}\r\n");
            }
            Ok(())
        }
        "flagstaff" => {
            let _ = out.write_str("# Flagstaff\r\n");
            for (name, n) in metrics::REASONS.iter().zip(&st.stats.evaluation_reasons) {
                let _ = write!(
                    out,
                    "evaluations_{}:{}\r\n",
                    name.to_ascii_lowercase(),
                    metrics::get(n)
                );
            }
            write!(
            out,
            "flags:{}\r\nsegments:{}\r\nrevision:{}\r\nstale:{}\r\npeer_messages_dropped:{}\r\n",
            counts.flags,
            counts.segments,
            counts.revision,
            u8::from(st.is_stale()),
            st.raft.get().map_or(0, |n| n.peer_messages_dropped())
        )
        }
        "keyspace" => {
            let keys = counts.flags + counts.segments;
            if keys > 0 {
                write!(out, "# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n")
            } else {
                write!(out, "# Keyspace\r\n")
            }
        }
        _ => Ok(()),
    };
}

/// Bytes as Redis's `bytesToHuman` writes them (`1.50M`).
fn human_bytes(n: u64) -> String {
    let n = n as f64;
    let units = [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in units {
        if n >= size as f64 {
            return format!("{:.2}{unit}", n / size as f64);
        }
    }
    format!("{n}B")
}

fn fsync_name(mode: crate::config::FsyncMode) -> &'static str {
    match mode {
        crate::config::FsyncMode::Always => "always",
        crate::config::FsyncMode::Everysec => "everysec",
    }
}

/// `TIME`: `[unix seconds, microseconds]`.
pub fn time(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let now = crate::clock::since_epoch();
    Ok(Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
    .into())
}

/// `DBSIZE`: flags plus segments.
pub fn dbsize(ctx: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    let c = ctx.state.store.counts();
    Ok(Reply::Integer((c.flags + c.segments) as i64).into())
}

/// `SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE]`: graceful shutdown.
pub fn shutdown(_: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    for a in &args[1..] {
        if !["NOSAVE", "SAVE", "NOW", "FORCE"]
            .iter()
            .any(|w| parse::is(a, w))
        {
            return Err(CommandError::Syntax);
        }
    }
    Ok(Action::Shutdown)
}

/// `CONFIG <subcommand>`.
pub fn config(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    dispatch_sub(ctx, &table::CONFIG, args)
}

/// `CONFIG GET pattern [pattern ...]`: the parameters clients ask for.
pub fn config_get(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<Action, CommandError> {
    let s = &ctx.state.settings;
    let params: Vec<(&str, String)> = vec![
        ("bind", s.bind.clone()),
        ("port", s.port.to_string()),
        ("dir", s.data_dir.display().to_string()),
        ("requirepass", s.requirepass.clone().unwrap_or_default()),
        ("maxclients", s.maxclients.to_string()),
        ("timeout", s.timeout.to_string()),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", fsync_name(s.fsync).into()),
        ("proto-max-bulk-len", s.proto_max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            s.client_query_buffer_limit.to_string(),
        ),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("loglevel", s.log_level.clone()),
        (
            "protected-mode",
            if s.requirepass.is_some() { "no" } else { "yes" }.into(),
        ),
        ("cluster-enabled", "no".into()),
        (
            "client-output-buffer-limit",
            format!(
                "normal 0 0 0 slave 268435456 67108864 60 pubsub {} {} {}",
                s.pubsub_hard_limit, s.pubsub_soft_limit, s.pubsub_soft_seconds
            ),
        ),
        ("io-threads", s.threads.to_string()),
        ("shutdown-timeout", s.shutdown_timeout.to_string()),
    ];
    let mut out = Vec::new();
    for (name, value) in &params {
        if args[2..]
            .iter()
            .any(|p| crate::glob::matches(p, name.as_bytes(), true))
        {
            out.push((Reply::bulk(name), Reply::bulk(value)));
        }
    }
    Ok(Reply::Map(out).into())
}

/// `CONFIG HELP`.
pub fn config_help(_: &mut Ctx<'_>, _: &[Bytes]) -> Result<Action, CommandError> {
    Ok(help_reply("CONFIG", &table::CONFIG))
}
