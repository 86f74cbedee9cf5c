-- wrk script: OFREP single-flag evaluations with a random targeting key.
-- Usage: wrk -s benches/ofrep.lua http://127.0.0.1:PORT
local headers = { ["Content-Type"] = "application/json" }
request = function()
  local body = string.format(
    '{"context":{"targetingKey":"user-%d","country":"US","plan":"free","beta":true}}',
    math.random(100000))
  return wrk.format("POST", "/ofrep/v1/evaluate/flags/prod:checkout", headers, body)
end
