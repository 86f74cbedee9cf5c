// OFREP through the real Node OpenFeature server SDK and its OFREP provider
// (@openfeature/ofrep-provider 0.1.3, the version the registry serves).
// Usage: node ofrep_check.js RESP_PORT HTTP_PORT LIMITED_RESP LIMITED_HTTP
'use strict';
const fs = require('fs');
const path = require('path');
const Redis = require('ioredis');
const { OpenFeature } = require('@openfeature/server-sdk');
const { OFREPProvider } = require('@openfeature/ofrep-provider');

const [respPort, httpPort, limitedResp, limitedHttp] = process.argv.slice(2).map(Number);
const flags = JSON.parse(fs.readFileSync(path.join(__dirname, 'ofrep_flags.json'), 'utf8'));

function check(cond, what) {
  if (!cond) {
    console.error(`FAIL: ${what}`);
    process.exit(1);
  }
}

async function load(port, password) {
  const r = new Redis({ port, password });
  for (const [key, def] of Object.entries(flags)) {
    await r.call('FLAG.SET', key, JSON.stringify(def));
  }
  return r;
}

async function main() {
  const r = await load(respPort);
  await OpenFeature.setProviderAndWait('main', new OFREPProvider({ baseUrl: `http://127.0.0.1:${httpPort}` }));
  const client = OpenFeature.getClient('main');
  const ctx = { targetingKey: 'user-1', plan: 'pro' };
  const s = (d) => JSON.stringify(d);

  let d = await client.getBooleanDetails('compat:enabled', false, ctx);
  check(d.value === true && d.variant === 'on' && d.reason === 'TARGETING_MATCH', `boolean: ${s(d)}`);
  check(d.flagMetadata.rule_id === 'pro' && Number.isInteger(d.flagMetadata.version), `metadata: ${s(d)}`);
  d = await client.getStringDetails('compat:banner', 'x', {});
  check(d.value === 'hi there' && d.variant === 'fancy' && d.reason === 'STATIC', `string: ${s(d)}`);
  d = await client.getNumberDetails('compat:limit', 0, ctx);
  check((d.value === 10 || d.value === 25) && d.reason === 'SPLIT', `integer: ${s(d)}`);
  d = await client.getNumberDetails('compat:limit', 7, {});
  check(d.value === 7 && d.errorCode === 'TARGETING_KEY_MISSING', `split without a targeting key: ${s(d)}`);
  d = await client.getNumberDetails('compat:ratio', 0, { targetingKey: 'vip' });
  check(d.value === 1 && d.reason === 'TARGETING_MATCH', `float: ${s(d)}`);
  d = await client.getObjectDetails('compat:theme', {}, ctx);
  check(d.value.color === 'blue' && d.variant === 'blue', `object: ${s(d)}`);
  d = await client.getBooleanDetails('compat:killed', true, ctx);
  check(d.value === false && d.variant === 'off' && d.reason === 'DISABLED', `disabled: ${s(d)}`);
  d = await client.getBooleanDetails('compat:ghost', true, ctx);
  check(d.value === true && d.errorCode === 'FLAG_NOT_FOUND' && d.reason === 'ERROR', `not found: ${s(d)}`);
  // Keys the JS provider percent-encodes arrive decoded.
  d = await client.getBooleanDetails('compat:enabled', false, ctx);
  check(d.flagKey === 'compat:enabled' && d.errorCode === undefined, `encoded key: ${s(d)}`);

  // The same answers as a redis-cli user gets.
  for (const key of Object.keys(flags)) {
    const detail = await r.call('FLAG.DETAIL', key, JSON.stringify({ key: 'user-1', plan: 'pro' }));
    const m = {};
    for (let i = 0; i < detail.length; i += 2) m[detail[i]] = detail[i + 1];
    const want = JSON.parse(m.value);
    const get = { boolean: 'getBooleanDetails', string: 'getStringDetails', number: 'getNumberDetails' }[typeof want]
      || 'getObjectDetails';
    d = await client[get](key, typeof want === 'object' ? {} : want, ctx);
    check(s(d.value) === s(JSON.parse(m.value)), `${key}: SDK ${s(d.value)} vs FLAG.DETAIL ${m.value}`);
    check(d.variant === m.variation && d.reason === m.openfeature_reason, `${key}: ${s(d)} vs ${s(m)}`);
  }
  r.disconnect();

  // A wrong credential: refused, the caller's default.
  const lr = await load(limitedResp, 'compat-pw');
  lr.disconnect();
  await OpenFeature.setProviderAndWait('intruder', new OFREPProvider({
    baseUrl: `http://127.0.0.1:${limitedHttp}`, headers: [['Authorization', 'Bearer alice:compat-pw']],
  }));
  d = await OpenFeature.getClient('intruder').getBooleanDetails('compat:enabled', false, ctx);
  check(d.value === false && d.errorCode !== undefined && d.reason === 'ERROR', `wrong user: ${s(d)}`);

  // 429: the provider pauses until Retry-After, then calls again.
  await OpenFeature.setProviderAndWait('limited', new OFREPProvider({
    baseUrl: `http://127.0.0.1:${limitedHttp}`, headers: [['X-API-Key', 'default:compat-pw']],
  }));
  const limited = OpenFeature.getClient('limited');
  const results = [];
  for (let i = 0; i < 6; i++) results.push(await limited.getBooleanDetails('compat:enabled', false, ctx));
  const errors = results.filter((x) => x.errorCode !== undefined);
  check(errors.length > 0 && errors.every((x) => x.value === false), `rate limited calls give the default: ${s(results)}`);
  await new Promise((res) => setTimeout(res, 2500));
  d = await limited.getBooleanDetails('compat:enabled', false, ctx);
  check(d.value === true && d.errorCode === undefined, `after Retry-After: ${s(d)}`);
  await OpenFeature.close();
  console.log('node OpenFeature server SDK + OFREP provider: all checks passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
