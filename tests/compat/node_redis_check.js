// node-redis with default settings: connect, pipelines, flags.
const { createClient } = require('redis');

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

const FLAG = {
  on: true,
  variations: [{ name: 'off', value: false }, { name: 'on', value: true }],
  off_variation: 'off',
  fallthrough: { variation: 'on' },
};

async function main(port) {
  const c = createClient({ socket: { port, host: '127.0.0.1', reconnectStrategy: false } });
  c.on('error', (e) => { console.error('node-redis error', e); process.exit(1); });
  await c.connect();
  check((await c.ping()) === 'PONG', 'ping');
  check((await c.echo('x')) === 'x', 'echo');
  check((await c.clientSetName('compat-node')) === 'OK', 'setname');
  check((await c.info()).includes('role:master'), 'info');
  const key = 'compat:node-flag';
  const piped = await c.multi().ping().addCommand(['FLAG.SET', key, JSON.stringify(FLAG)]).execAsPipeline();
  check(piped[0] === 'PONG' && piped[1] === 1, `pipeline ${JSON.stringify(piped)}`);
  const tx = await c.multi().addCommand(['FLAG.EVAL', key, '{"key":"u"}']).addCommand(['FLAG.DEL', key]).exec();
  check(tx[0] === 'true' && tx[1] === 1, `multi ${JSON.stringify(tx)}`);
  await c.quit();
  console.log('node-redis ok');
}

main(Number(process.argv[2])).catch((e) => { console.error(e); process.exit(1); });
