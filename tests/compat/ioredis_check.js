// ioredis 6 with default settings: connect, pipelines, flags.
const Redis = require('ioredis');

const FLAG = {
  on: true,
  variations: [{ name: 'off', value: false }, { name: 'on', value: true }],
  off_variation: 'off',
  rules: [{ id: 'eu', clauses: [{ attribute: 'country', op: 'in', values: ['DE', 'FR'] }], serve: { variation: 'on' } }],
  fallthrough: { variation: 'off' },
};

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

async function main(port) {
  const r = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
  r.on('error', (e) => { console.error('ioredis error', e); process.exit(1); });
  check((await r.ping()) === 'PONG', 'ping');
  check((await r.echo('hi')) === 'hi', 'echo');
  check((await r.client('SETNAME', 'compat-ioredis')) === 'OK', 'setname');
  const info = await r.info();
  check(info.includes('redis_version:') && info.includes('role:master'), 'info');
  const piped = await r.pipeline().ping().echo('a').exec();
  check(piped[0][1] === 'PONG' && piped[1][1] === 'a', `pipeline ${JSON.stringify(piped)}`);
  const key = 'compat:ioredis-checkout';
  const tx = await r.multi()
    .call('FLAG.SET', key, JSON.stringify(FLAG))
    .call('FLAG.EVAL', key, JSON.stringify({ key: 'u1', country: 'DE' }))
    .exec();
  check(tx[0][1] === 1 && tx[1][1] === 'true', `multi ${JSON.stringify(tx)}`);
  check((await r.call('FLAG.EVAL', key, JSON.stringify({ country: 'US' }))) === 'false', 'eval off');
  let refused = false;
  try { await r.call('FLAG.SET', key, '{"on":true}'); } catch (e) { refused = String(e.message).startsWith('INVALID'); }
  check(refused, 'invalid definition refused');
  check((await r.call('FLAG.DEL', key)) === 1, 'del');
  check((await r.call('FLAG.EVAL', key)) === null, 'missing flag is nil');
  await r.quit();
  console.log('ioredis ok');
}

main(Number(process.argv[2])).catch((e) => { console.error(e); process.exit(1); });
