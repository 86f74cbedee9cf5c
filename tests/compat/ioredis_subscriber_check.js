// ioredis 6: a pattern subscriber receives flag change events.
const Redis = require('ioredis');

async function main(port) {
  const sub = new Redis({ port, host: '127.0.0.1' });
  const pub = new Redis({ port, host: '127.0.0.1' });
  const got = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no event within 5 s')), 5000);
    sub.on('pmessage', (pattern, channel, message) => {
      clearTimeout(timer);
      resolve({ pattern, channel, event: JSON.parse(message) });
    });
  });
  await sub.psubscribe('flag:io:*');
  const flag = { on: true, variations: [{ name: 'a', value: 1 }], off_variation: 'a', fallthrough: { variation: 'a' } };
  await pub.call('FLAG.SET', 'io:x', JSON.stringify(flag));
  const { pattern, channel, event } = await got;
  if (pattern !== 'flag:io:*' || channel !== 'flag:io:x' || event.event !== 'set' || event.version !== 1) {
    throw new Error(`unexpected event ${JSON.stringify(event)}`);
  }
  let refused = false;
  try { await pub.publish('flag:io:x', 'forged'); } catch (e) { refused = /reserved/.test(e.message); }
  if (!refused) throw new Error('PUBLISH on flag:* was not refused');
  sub.disconnect();
  pub.disconnect();
  console.log('ioredis subscriber ok');
}

main(Number(process.argv[2])).catch((e) => { console.error(e); process.exit(1); });
