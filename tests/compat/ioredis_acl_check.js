// ioredis 6 logged in as a restricted user (username/password options): it
// evaluates its environment's flags and gets Redis's NOPERM texts elsewhere.
// Usage: node ioredis_acl_check.js PORT (a server whose default user is open).
const Redis = require('ioredis');

const FLAG = JSON.stringify({
  on: true,
  variations: [{ name: 'off', value: false }, { name: 'on', value: true }],
  off_variation: 'off',
  fallthrough: { variation: 'on' },
});

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function main(port) {
  const admin = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  await admin.call('FLAG.SET', 'prod:acl-compat', FLAG);
  await admin.call('FLAG.SET', 'staging:acl-compat', FLAG);
  check((await admin.call('ACL', 'SETUSER', 'ioapp', 'on', '>iopw', '~prod:*', '+@connection', '+@flag-eval')) === 'OK', 'setuser');
  const app = new Redis({ port, host: '127.0.0.1', username: 'ioapp', password: 'iopw', maxRetriesPerRequest: 1 });
  app.on('error', (e) => { console.error('ioredis error', e); process.exit(1); });
  check((await app.call('ACL', 'WHOAMI').catch((e) => e.message)).startsWith('NOPERM'), 'whoami needs +acl');
  check((await app.ping()) === 'PONG', 'ping as ioapp');
  check((await app.call('FLAG.EVAL', 'prod:acl-compat', '{"key":"u1"}')) === 'true', 'evaluates prod');
  let err = await app.call('FLAG.EVAL', 'staging:acl-compat', '{"key":"u1"}').then(() => null, (e) => e.message);
  check(err === 'NOPERM No permissions to access a key', `staging denied: ${err}`);
  err = await app.call('FLAG.SET', 'prod:acl-compat', FLAG).then(() => null, (e) => e.message);
  check(err === "NOPERM User ioapp has no permissions to run the 'flag.set' command", `write denied: ${err}`);
  const log = await admin.call('ACL', 'LOG', '2');
  check(JSON.stringify(log).includes('ioapp'), `ACL LOG names the user: ${JSON.stringify(log)}`);
  await admin.call('ACL', 'DELUSER', 'ioapp');
  app.disconnect();
  admin.disconnect();
  console.log('ioredis restricted user: ok');
}

main(Number(process.argv[2])).catch((e) => { console.error(e); process.exit(1); });
