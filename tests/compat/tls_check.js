// ioredis 6 over TLS with Node's defaults (host name checked): tls: {ca, cert, key}.
const fs = require('fs');
const Redis = require('ioredis');

const [port, certs] = [Number(process.argv[2]), process.argv[3]];
const read = (f) => fs.readFileSync(`${certs}/${f}`);

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function main() {
  const r = new Redis({
    host: '127.0.0.1', port, maxRetriesPerRequest: 1,
    tls: { ca: read('ca.pem'), cert: read('client.pem'), key: read('client.key') },
  });
  r.on('error', (e) => { console.error('ioredis error', e); process.exit(1); });
  check((await r.ping()) === 'PONG', 'ping');
  await r.call('FLAG.SET', 'js:tls', JSON.stringify({
    on: true, variations: [{ name: 'a', value: 1 }], off_variation: 'a', fallthrough: { variation: 'a' },
  }));
  check((await r.call('FLAG.EVAL', 'js:tls', '{"key":"u"}')) === '1', 'eval');
  r.disconnect();

  // Without a client certificate the server refuses the connection.
  const bare = new Redis({
    host: '127.0.0.1', port, maxRetriesPerRequest: 0, retryStrategy: () => null,
    lazyConnect: true, tls: { ca: read('ca.pem') },
  });
  bare.on('error', () => {});
  let refused = false;
  try {
    await bare.connect();
    await bare.ping();
  } catch (e) {
    refused = true;
  }
  bare.disconnect();
  check(refused, 'a client without a certificate was served');
  console.log('ioredis TLS ok');
}

main().catch((e) => { console.error(e); process.exit(1); });
