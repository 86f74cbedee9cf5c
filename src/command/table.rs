//! The command table: the single list that dispatch, `COMMAND` and ACL read.

use super::spec::{
    block, integer, key, multiple, oneof, optional, spec, string, tagged, token, CommandSpec,
    Redact, Runs,
};
use crate::auth::Channels;

use super::{
    acl, connection as conn, experiment, flag, insight, monitor, pubsub as ps, raft, segment,
    server, stream, transaction as tx,
};

const CONN: &[&str] = &["@fast", "@connection"];
const SLOW_CONN: &[&str] = &["@slow", "@connection"];
const ADMIN: &[&str] = &["@admin", "@slow", "@dangerous"];
const CLUSTER_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous", "@flag-admin"];
const SUB_CAT: &[&str] = &["@pubsub", "@slow", "@flag-eval", "@flag-read"];
const FLAG_EVAL: &[&str] = &["@read", "@fast", "@flag-eval"];
const FLAG_SLOW_EVAL: &[&str] = &["@read", "@slow", "@flag-eval"];
const FLAG_READ: &[&str] = &["@read", "@fast", "@flag-read"];
const FLAG_SLOW_READ: &[&str] = &["@read", "@slow", "@flag-read"];
const FLAG_WRITE: &[&str] = &["@write", "@slow", "@flag-write"];
const FLAG_ADMIN_WRITE: &[&str] = &["@write", "@slow", "@flag-admin"];
/// The change stream: readable by evaluators and viewers.
const CHANGES_FAST: &[&str] = &["@stream", "@read", "@fast", "@flag-eval", "@flag-read"];
const CHANGES_SLOW: &[&str] = &["@stream", "@read", "@slow", "@flag-eval", "@flag-read"];
const TX: &[&str] = &["@fast", "@transaction"];

const READ_FLAGS: &[&str] = &["readonly", "fast"];
const SLOW_READ_FLAGS: &[&str] = &["readonly"];
const WRITE_FLAGS: &[&str] = &["write"];

const REASON: super::spec::Arg = optional(tagged("reason", "string", "REASON"));
const MATCH: super::spec::Arg = optional(tagged("pattern", "pattern", "MATCH"));

const ACL_ADMIN: &[&str] = &["@admin", "@slow", "@dangerous", "@flag-admin"];
const ACL_FLAGS: &[&str] = &["admin", "noscript", "loading", "stale"];
const ACL_PLAIN: &[&str] = &["noscript", "loading", "stale"];

/// `ACL` and its subcommands.
pub const ACL: CommandSpec = CommandSpec {
    subcommands: &[
        CommandSpec {
            args: &[optional(string("category"))],
            ..spec(
                "acl|cat",
                -2,
                ACL_PLAIN,
                &["@slow"],
                "server",
                "Lists the ACL categories, or the commands inside a category.",
                acl::cat,
            )
        },
        CommandSpec {
            args: &[multiple(string("username"))],
            ..spec(
                "acl|deluser",
                -3,
                ACL_FLAGS,
                ACL_ADMIN,
                "server",
                "Deletes ACL users, and terminates their connections.",
                acl::deluser,
            )
        },
        CommandSpec {
            args: &[
                string("username"),
                string("command"),
                optional(multiple(string("arg"))),
            ],
            ..spec(
                "acl|dryrun",
                -4,
                ACL_FLAGS,
                ACL_ADMIN,
                "server",
                "Simulates the execution of a command by a user, without executing the command.",
                acl::dryrun,
            )
        },
        CommandSpec {
            args: &[optional(integer("bits"))],
            ..spec(
                "acl|genpass",
                -2,
                ACL_PLAIN,
                &["@slow"],
                "server",
                "Generates a pseudorandom, secure password that can be used to identify ACL users.",
                acl::genpass,
            )
        },
        CommandSpec {
            args: &[string("username")],
            ..spec(
                "acl|getuser",
                3,
                ACL_FLAGS,
                ACL_ADMIN,
                "server",
                "Lists the ACL rules of a user.",
                acl::getuser,
            )
        },
        spec(
            "acl|help",
            2,
            &["loading", "stale"],
            &["@slow"],
            "server",
            "Returns helpful text about the different subcommands.",
            acl::help,
        ),
        spec(
            "acl|list",
            2,
            ACL_FLAGS,
            ACL_ADMIN,
            "server",
            "Dumps the effective rules in ACL file format.",
            acl::list,
        ),
        spec(
            "acl|load",
            2,
            ACL_FLAGS,
            ACL_ADMIN,
            "server",
            "Reloads the rules from the configured ACL file.",
            acl::load,
        ),
        CommandSpec {
            args: &[optional(oneof(
                "operation",
                &[integer("count"), token("reset", "RESET")],
            ))],
            ..spec(
                "acl|log",
                -2,
                ACL_FLAGS,
                ACL_ADMIN,
                "server",
                "Lists recent security events generated due to ACL rules.",
                acl::log,
            )
        },
        spec(
            "acl|save",
            2,
            ACL_FLAGS,
            ACL_ADMIN,
            "server",
            "Saves the effective ACL rules in the configured ACL file.",
            acl::save,
        ),
        CommandSpec {
            args: &[string("username"), optional(multiple(string("rule")))],
            redact: Redact::Arguments,
            ..spec(
                "acl|setuser",
                -3,
                ACL_FLAGS,
                ACL_ADMIN,
                "server",
                "Creates and modifies an ACL user and its rules.",
                acl::setuser,
            )
        },
        spec(
            "acl|users",
            2,
            ACL_FLAGS,
            ACL_ADMIN,
            "server",
            "Lists all ACL users.",
            acl::users,
        ),
        spec(
            "acl|whoami",
            2,
            ACL_PLAIN,
            &["@slow"],
            "server",
            "Returns the authenticated username of the current connection.",
            acl::whoami,
        ),
    ],
    ..spec(
        "acl",
        -2,
        &[],
        &["@slow"],
        "server",
        "A container for Access List Control commands.",
        acl::acl,
    )
};

/// `CLIENT` and its subcommands.
pub const CLIENT: CommandSpec = CommandSpec {
    subcommands: &[
        spec(
            "client|id",
            2,
            &[],
            SLOW_CONN,
            "connection",
            "Returns the unique client ID of the connection.",
            conn::client_id,
        ),
        CommandSpec {
            args: &[string("connection-name")],
            ..spec(
                "client|setname",
                3,
                &[],
                SLOW_CONN,
                "connection",
                "Sets the connection name.",
                conn::client_setname,
            )
        },
        spec(
            "client|getname",
            2,
            &[],
            SLOW_CONN,
            "connection",
            "Returns the name of the connection.",
            conn::client_getname,
        ),
        CommandSpec {
            args: &[oneof(
                "attr",
                &[
                    tagged("libname", "string", "LIB-NAME"),
                    tagged("libver", "string", "LIB-VER"),
                ],
            )],
            ..spec(
                "client|setinfo",
                4,
                &[],
                SLOW_CONN,
                "connection",
                "Sets information specific to the client or connection.",
                conn::client_setinfo,
            )
        },
        CommandSpec {
            args: &[
                optional(tagged("client-type", "string", "TYPE")),
                optional(multiple(tagged("client-id", "integer", "ID"))),
            ],
            ..spec(
                "client|list",
                -2,
                &["admin"],
                ADMIN,
                "connection",
                "Lists open connections.",
                conn::client_list,
            )
        },
        spec(
            "client|info",
            2,
            &[],
            SLOW_CONN,
            "connection",
            "Returns information about the connection.",
            conn::client_info,
        ),
        CommandSpec {
            args: &[oneof(
                "filter",
                &[
                    string("ip:port"),
                    block(
                        "new-format",
                        &[
                            optional(tagged("client-id", "integer", "ID")),
                            optional(tagged("client-type", "string", "TYPE")),
                            optional(tagged("username", "string", "USER")),
                            optional(tagged("ip:port", "string", "ADDR")),
                            optional(tagged("ip:port", "string", "LADDR")),
                            optional(tagged("yes/no", "string", "SKIPME")),
                            optional(tagged("maxage", "integer", "MAXAGE")),
                        ],
                    ),
                ],
            )],
            ..spec(
                "client|kill",
                -3,
                &["admin"],
                ADMIN,
                "connection",
                "Terminates open connections.",
                conn::client_kill,
            )
        },
        CommandSpec {
            args: &[oneof("enabled", &[token("on", "ON"), token("off", "OFF")])],
            ..spec(
                "client|no-evict",
                3,
                &["admin"],
                ADMIN,
                "connection",
                "Sets the client eviction mode of the connection.",
                conn::client_on_off,
            )
        },
        CommandSpec {
            args: &[oneof("enabled", &[token("on", "ON"), token("off", "OFF")])],
            ..spec(
                "client|no-touch",
                3,
                &[],
                SLOW_CONN,
                "connection",
                "Controls whether commands sent by the client affect the LRU/LFU of accessed keys.",
                conn::client_on_off,
            )
        },
        CommandSpec {
            args: &[oneof(
                "action",
                &[
                    token("on", "ON"),
                    token("off", "OFF"),
                    token("skip", "SKIP"),
                ],
            )],
            ..spec(
                "client|reply",
                3,
                &[],
                SLOW_CONN,
                "connection",
                "Instructs the server whether to reply to commands.",
                conn::client_reply,
            )
        },
        spec(
            "client|help",
            2,
            &[],
            SLOW_CONN,
            "connection",
            "Returns helpful text about the different subcommands.",
            conn::client_help,
        ),
    ],
    ..spec(
        "client",
        -2,
        &[],
        SLOW_CONN,
        "connection",
        "A container for client connection commands.",
        conn::client,
    )
};

/// `COMMAND` and its subcommands.
pub const COMMAND: CommandSpec = CommandSpec {
    subcommands: &[
        spec(
            "command|count",
            2,
            &[],
            SLOW_CONN,
            "server",
            "Returns a count of commands.",
            server::command_count,
        ),
        CommandSpec {
            args: &[optional(multiple(string("command-name")))],
            ..spec(
                "command|info",
                -2,
                &[],
                SLOW_CONN,
                "server",
                "Returns information about one, multiple or all commands.",
                server::command_info_cmd,
            )
        },
        CommandSpec {
            args: &[optional(multiple(string("command-name")))],
            ..spec(
                "command|docs",
                -2,
                &[],
                SLOW_CONN,
                "server",
                "Returns documentary information about one, multiple or all commands.",
                server::command_docs,
            )
        },
        CommandSpec {
            args: &[optional(block(
                "filterby",
                &[tagged("pattern", "pattern", "PATTERN")],
            ))],
            ..spec(
                "command|list",
                -2,
                &[],
                SLOW_CONN,
                "server",
                "Returns a list of command names.",
                server::command_list,
            )
        },
        spec(
            "command|help",
            2,
            &[],
            SLOW_CONN,
            "server",
            "Returns helpful text about the different subcommands.",
            server::command_help,
        ),
    ],
    ..spec(
        "command",
        -1,
        &[],
        SLOW_CONN,
        "server",
        "Returns detailed information about all commands.",
        server::command,
    )
};

/// `CONFIG` and its subcommands.
pub const CONFIG: CommandSpec = CommandSpec {
    subcommands: &[
        CommandSpec {
            args: &[multiple(string("parameter"))],
            ..spec(
                "config|get",
                -3,
                &["admin"],
                ADMIN,
                "server",
                "Returns the effective values of configuration parameters.",
                server::config_get,
            )
        },
        spec(
            "config|help",
            2,
            &[],
            SLOW_CONN,
            "server",
            "Returns helpful text about the different subcommands.",
            server::config_help,
        ),
    ],
    ..spec(
        "config",
        -2,
        &[],
        ADMIN,
        "server",
        "A container for server configuration commands.",
        server::config,
    )
};

const PUBSUB_CAT: &[&str] = &["@pubsub", "@slow"];
const PUBSUB_FLAGS: &[&str] = &["pubsub"];

/// `PUBSUB` and its subcommands.
pub const PUBSUB: CommandSpec = CommandSpec {
    subcommands: &[
        CommandSpec {
            args: &[optional(tagged("pattern", "pattern", "PATTERN"))],
            ..spec(
                "pubsub|channels",
                -2,
                PUBSUB_FLAGS,
                PUBSUB_CAT,
                "pubsub",
                "Returns the active channels.",
                ps::pubsub_channels,
            )
        },
        CommandSpec {
            args: &[optional(multiple(string("channel")))],
            ..spec(
                "pubsub|numsub",
                -2,
                PUBSUB_FLAGS,
                PUBSUB_CAT,
                "pubsub",
                "Returns a count of subscribers to channels.",
                ps::pubsub_numsub,
            )
        },
        spec(
            "pubsub|numpat",
            2,
            PUBSUB_FLAGS,
            PUBSUB_CAT,
            "pubsub",
            "Returns a count of unique pattern subscriptions.",
            ps::pubsub_numpat,
        ),
        spec(
            "pubsub|help",
            2,
            &[],
            PUBSUB_CAT,
            "pubsub",
            "Returns helpful text about the different subcommands.",
            ps::pubsub_help,
        ),
    ],
    ..spec(
        "pubsub",
        -2,
        &[],
        PUBSUB_CAT,
        "pubsub",
        "A container for Pub/Sub commands.",
        ps::pubsub,
    )
};

const CLUSTER_FLAGS: &[&str] = &["admin", "loading"];

/// `RAFT.NODE` and its subcommands.
pub const RAFT_NODE: CommandSpec = CommandSpec {
    subcommands: &[
        CommandSpec {
            args: &[
                integer("node-id"),
                string("cluster-addr"),
                optional(string("client-addr")),
                optional(token("learner", "LEARNER")),
            ],
            ..spec(
                "raft.node|add",
                -4,
                CLUSTER_FLAGS,
                CLUSTER_ADMIN,
                "cluster",
                "Adds a node (it catches up, then votes unless LEARNER).",
                raft::node_add,
            )
        },
        CommandSpec {
            args: &[integer("node-id")],
            ..spec(
                "raft.node|remove",
                3,
                CLUSTER_FLAGS,
                CLUSTER_ADMIN,
                "cluster",
                "Removes a voter or learner from the cluster.",
                raft::node_remove,
            )
        },
        CommandSpec {
            args: &[integer("node-id")],
            ..spec(
                "raft.node|promote",
                3,
                CLUSTER_FLAGS,
                CLUSTER_ADMIN,
                "cluster",
                "Makes a learner a voter.",
                raft::node_promote,
            )
        },
    ],
    ..spec(
        "raft.node",
        -2,
        &[],
        CLUSTER_ADMIN,
        "cluster",
        "A container for cluster membership commands.",
        raft::node,
    )
};

/// `RAFT.CLUSTER` and its subcommands.
pub const RAFT_CLUSTER: CommandSpec = CommandSpec {
    subcommands: &[
        spec(
            "raft.cluster|init",
            2,
            CLUSTER_FLAGS,
            CLUSTER_ADMIN,
            "cluster",
            "Makes this empty node a one-member cluster.",
            raft::cluster_init,
        ),
        CommandSpec {
            args: &[string("member-addr")],
            ..spec(
                "raft.cluster|join",
                3,
                CLUSTER_FLAGS,
                CLUSTER_ADMIN,
                "cluster",
                "Asks the member at host:port to add this empty node.",
                raft::cluster_join,
            )
        },
    ],
    ..spec(
        "raft.cluster",
        -2,
        &[],
        CLUSTER_ADMIN,
        "cluster",
        "A container for cluster formation commands.",
        raft::cluster,
    )
};

/// Every top-level command.
pub static COMMANDS: &[CommandSpec] = &[
    // connection
    CommandSpec {
        args: &[optional(string("message"))],
        runs: Runs::WHILE_SUBSCRIBED,
        ..spec("ping", -1, &["fast"], CONN, "connection", "Returns the server's liveliness response.", conn::ping)
    },
    CommandSpec { args: &[string("message")], ..spec("echo", 2, &["fast"], CONN, "connection", "Returns the given string.", conn::echo) },
    CommandSpec {
        args: &[optional(block("arguments", &[
            integer("protover"),
            optional(block("auth", &[tagged("username", "string", "AUTH"), string("password")])),
            optional(tagged("clientname", "string", "SETNAME")),
        ]))],
        redact: Redact::HelloAuth,
        ..spec("hello", -1, &["loading", "fast", "no-auth"], CONN, "connection", "Handshakes with the server.", conn::hello)
    },
    CommandSpec {
        args: &[optional(string("username")), string("password")],
        redact: Redact::Arguments,
        ..spec("auth", -2, &["loading", "fast", "no-auth"], CONN, "connection", "Authenticates the connection.", conn::auth)
    },
    CommandSpec { args: &[integer("index")], ..spec("select", 2, &["fast"], CONN, "connection", "Changes the selected database.", conn::select) },
    CommandSpec { runs: Runs::INSIDE_MULTI.and(Runs::WHILE_SUBSCRIBED), ..spec("quit", -1, &["loading", "fast", "no-auth"], CONN, "connection", "Closes the connection.", conn::quit) },
    CommandSpec { runs: Runs::INSIDE_MULTI.and(Runs::WHILE_SUBSCRIBED), ..spec("reset", 1, &["loading", "fast", "no-auth"], CONN, "connection", "Resets the connection.", conn::reset) },
    CLIENT,
    // server
    ACL,
    spec("monitor", 1, &["admin"], ADMIN, "server", "Listens for all requests received by the server in real time.", monitor::monitor),
    COMMAND,
    CommandSpec {
        args: &[optional(multiple(string("section")))],
        ..spec("info", -1, &[], &["@slow", "@dangerous"], "server", "Returns information and statistics about the server.", server::info)
    },
    spec("time", 1, &["fast"], &["@fast"], "server", "Returns the server time.", server::time),
    CONFIG,
    spec("dbsize", 1, &["readonly", "fast"], &["@keyspace", "@read", "@fast"], "server", "Returns the number of flags and segments.", server::dbsize),
    CommandSpec {
        args: &[optional(oneof("save-selector", &[token("nosave", "NOSAVE"), token("save", "SAVE")])), optional(token("now", "NOW")), optional(token("force", "FORCE"))],
        ..spec("shutdown", -1, &["admin", "no-multi"], ADMIN, "server", "Stops accepting connections, finishes in-flight commands and exits.", server::shutdown)
    },
    // pub/sub
    CommandSpec {
        args: &[multiple(string("channel"))],
        acl_channels: Channels::From(1),
        runs: Runs::WHILE_SUBSCRIBED,
        ..spec("subscribe", -2, PUBSUB_FLAGS, SUB_CAT, "pubsub", "Listens for messages published to channels.", ps::subscribe)
    },
    CommandSpec {
        args: &[optional(multiple(string("channel")))],
        runs: Runs::WHILE_SUBSCRIBED,
        ..spec("unsubscribe", -1, PUBSUB_FLAGS, SUB_CAT, "pubsub", "Stops listening to messages posted to channels.", ps::unsubscribe)
    },
    CommandSpec {
        args: &[multiple(string("pattern"))],
        acl_channels: Channels::PatternsFrom(1),
        runs: Runs::WHILE_SUBSCRIBED,
        ..spec("psubscribe", -2, PUBSUB_FLAGS, SUB_CAT, "pubsub", "Listens for messages published to channels that match patterns.", ps::psubscribe)
    },
    CommandSpec {
        args: &[optional(multiple(string("pattern")))],
        runs: Runs::WHILE_SUBSCRIBED,
        ..spec("punsubscribe", -1, PUBSUB_FLAGS, SUB_CAT, "pubsub", "Stops listening to messages published to channels that match patterns.", ps::punsubscribe)
    },
    CommandSpec {
        args: &[string("channel"), string("message")],
        acl_channels: Channels::At(1),
        ..spec("publish", 3, &["pubsub", "fast"], &["@pubsub", "@fast"], "pubsub", "Posts a message to a channel.", ps::publish)
    },
    PUBSUB,
    // the change stream
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1, acl_keys: false,
        args: &[key("key")],
        runs: Runs::READS_STORAGE,
        ..spec("xlen", 2, &["readonly", "fast"], CHANGES_FAST, "stream", "Returns the number of entries retained in flagstaff:changes.", stream::xlen)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1, acl_keys: false,
        args: &[key("key"), string("start"), string("end"), optional(tagged("count", "integer", "COUNT"))],
        runs: Runs::READS_STORAGE,
        ..spec("xrange", -4, &["readonly"], CHANGES_SLOW, "stream", "Returns change-stream entries with ids in a range.", stream::xrange)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1, acl_keys: false,
        args: &[key("key"), string("end"), string("start"), optional(tagged("count", "integer", "COUNT"))],
        runs: Runs::READS_STORAGE,
        ..spec("xrevrange", -4, &["readonly"], CHANGES_SLOW, "stream", "Returns change-stream entries with ids in a range, newest first.", stream::xrevrange)
    },
    CommandSpec {
        first_key: 0, last_key: 0, key_step: 0,
        args: &[
            optional(tagged("count", "integer", "COUNT")),
            optional(tagged("milliseconds", "integer", "BLOCK")),
            block("streams", &[token("streams", "STREAMS"), multiple(key("key")), multiple(string("id"))]),
        ],
        runs: Runs::READS_STORAGE.and(Runs::BLOCKS),
        ..spec("xread", -4, &["readonly", "blocking", "movablekeys"], &["@stream", "@read", "@slow", "@blocking", "@flag-eval", "@flag-read"], "stream", "Returns change-stream entries after an id, optionally waiting for them.", stream::xread)
    },
    // transactions
    CommandSpec { runs: Runs::INSIDE_MULTI, ..spec("multi", 1, &["fast"], TX, "transactions", "Starts a transaction.", tx::multi) },
    CommandSpec { runs: Runs::INSIDE_MULTI, ..spec("exec", 1, &[], &["@slow", "@transaction"], "transactions", "Executes all commands in a transaction.", tx::exec_handler) },
    CommandSpec { runs: Runs::INSIDE_MULTI, ..spec("discard", 1, &["fast"], TX, "transactions", "Discards a transaction.", tx::discard) },
    CommandSpec {
        first_key: 1, last_key: -1, key_step: 1,
        args: &[multiple(key("key"))],
        runs: Runs::INSIDE_MULTI,
        ..spec("watch", -2, &["fast"], TX, "transactions", "Monitors changes to keys to determine the execution of a transaction.", tx::watch)
    },
    spec("unwatch", 1, &["fast"], TX, "transactions", "Forgets about watched keys of a transaction.", tx::unwatch),
    // cluster
    spec("raft.info", 1, &["loading"], &["@slow", "@flag-admin"], "cluster", "Returns this node's raft role, term, leader, indexes and members as INFO-style text.", raft::info),
    CommandSpec {
        args: &[optional(integer("revision")), optional(tagged("milliseconds", "integer", "TIMEOUT"))],
        ..spec("raft.barrier", -1, &["loading"], &["@slow", "@flag-admin"], "cluster", "Returns once this node has applied a revision (default: every write committed before the call).", raft::barrier)
    },
    RAFT_NODE,
    RAFT_CLUSTER,
    // flags
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), string("json"), optional(tagged("version", "integer", "IFVERSION")), REASON],
        ..spec("flag.set", -3, WRITE_FLAGS, FLAG_WRITE, "flag", "Creates or replaces a flag; replies with its new version.", flag::set)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("flag.get", 2, READ_FLAGS, FLAG_READ, "flag", "Returns a flag's definition with version, revision and allocations.", flag::get)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), REASON],
        ..spec("flag.del", -2, &["write"], FLAG_WRITE, "flag", "Deletes a flag unless another flag depends on it.", flag::del)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), oneof("state", &[token("on", "ON"), token("off", "OFF")]), REASON],
        ..spec("flag.toggle", -3, &["write"], FLAG_WRITE, "flag", "Turns a flag on or off (the kill switch); replies with its new version.", flag::toggle)
    },
    CommandSpec {
        args: &[MATCH],
        ..spec("flag.list", -1, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Lists flag keys, optionally matching a pattern.", flag::list)
    },
    CommandSpec {
        args: &[integer("cursor"), MATCH, optional(tagged("count", "integer", "COUNT"))],
        ..spec("flag.scan", -2, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Incrementally iterates flag keys.", flag::scan)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), optional(string("context"))],
        ..spec("flag.eval", -2, READ_FLAGS, FLAG_EVAL, "flag", "Evaluates a flag for a context; replies with the value as JSON, or nil if the flag is missing.", flag::eval)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), optional(string("context"))],
        ..spec("flag.detail", -2, READ_FLAGS, FLAG_EVAL, "flag", "Evaluates a flag and explains the result.", flag::detail)
    },
    CommandSpec {
        first_key: 2, last_key: -1, key_step: 1,
        args: &[string("context"), multiple(key("key"))],
        ..spec("flag.meval", -3, READ_FLAGS, FLAG_EVAL, "flag", "Evaluates several flags for one context.", flag::meval)
    },
    CommandSpec {
        args: &[string("context"), MATCH],
        ..spec("flag.evalall", -2, SLOW_READ_FLAGS, FLAG_SLOW_EVAL, "flag", "Evaluates every flag (optionally matching a pattern) for a context.", flag::evalall)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), optional(tagged("count", "integer", "COUNT"))],
        runs: Runs::READS_STORAGE,
        ..spec("flag.history", -2, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Returns a flag's audit entries, newest first.", flag::history)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), integer("version"), REASON],
        runs: Runs::READS_STORAGE,
        ..spec("flag.rollback", -3, &["write"], FLAG_WRITE, "flag", "Restores an earlier version's definition as a new version.", flag::rollback)
    },
    CommandSpec {
        args: &[MATCH],
        ..spec("flag.dump", -1, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Returns every flag and segment and the revision they reflect, as one JSON document.", flag::dump)
    },
    CommandSpec {
        args: &[string("dump"), REASON],
        ..spec("flag.import", -2, WRITE_FLAGS, FLAG_ADMIN_WRITE, "flag", "Applies a FLAG.DUMP document, all of it or none of it; replies with the number of keys written.", flag::import)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), optional(tagged("ts", "integer", "SINCE")), optional(tagged("seconds", "integer", "BUCKETS")), optional(token("local", "LOCAL"))],
        ..spec("flag.stats", -2, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Returns a flag's evaluation counts by variation and reason, when it was first and last evaluated, and with BUCKETS a time series of counts by variation, over the cluster.", insight::stats)
    },
    CommandSpec {
        args: &[optional(tagged("days", "integer", "DAYS")), MATCH],
        ..spec("flag.stale", -1, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Lists flags not evaluated, or serving a single variation, for a number of days.", insight::stale)
    },
    CommandSpec {
        args: &[string("event"), string("context"), optional(tagged("value", "double", "VALUE"))],
        ..spec("flag.track", -3, &["fast"], &["@fast", "@flag-eval"], "flag", "Records a metric event for the context's key in the running experiments that read it; replies with how many.", experiment::track)
    },
    // experiments
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), string("json")],
        ..spec("experiment.set", 3, WRITE_FLAGS, FLAG_WRITE, "flag", "Creates or replaces an experiment on a flag's rollout; replies with its new version.", experiment::set)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("experiment.get", 2, READ_FLAGS, FLAG_READ, "flag", "Returns an experiment's definition with its state and version.", experiment::get)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), optional(tagged("count", "integer", "COUNT"))],
        runs: Runs::READS_STORAGE,
        ..spec("experiment.history", -2, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Returns an experiment's audit records (set, start, stop, delete), newest first.", experiment::history)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("experiment.del", 2, &["write"], FLAG_WRITE, "flag", "Deletes an experiment and drops its units.", experiment::del)
    },
    CommandSpec {
        args: &[MATCH],
        ..spec("experiment.list", -1, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Lists experiment keys.", experiment::list)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("experiment.start", 2, &["write"], FLAG_WRITE, "flag", "Starts recording exposures and metric events for an experiment.", experiment::start)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("experiment.stop", 2, &["write"], FLAG_WRITE, "flag", "Stops recording for an experiment; its results stay readable.", experiment::stop)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("experiment.results", 2, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Returns an experiment's statistics over every reachable node, as one JSON document.", experiment::results)
    },
    // segments
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), string("json"), REASON],
        ..spec("segment.set", -3, WRITE_FLAGS, FLAG_WRITE, "flag", "Creates or replaces a segment; replies with its new version.", segment::set)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key")],
        ..spec("segment.get", 2, READ_FLAGS, FLAG_READ, "flag", "Returns a segment's definition.", segment::get)
    },
    CommandSpec {
        first_key: 1, last_key: 1, key_step: 1,
        args: &[key("key"), REASON],
        ..spec("segment.del", -2, &["write"], FLAG_WRITE, "flag", "Deletes a segment unless a flag references it.", segment::del)
    },
    CommandSpec {
        args: &[MATCH],
        ..spec("segment.list", -1, SLOW_READ_FLAGS, FLAG_SLOW_READ, "flag", "Lists segment keys.", segment::list)
    },
];
