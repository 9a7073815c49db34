-- Budget tallies in Redis: the rules of policies/budget.py (BudgetBook), one operation per call, atomic.
--
-- Called by federation/budget_redis.py (EVALSHA of this whole file): KEYS[1] is the run's key base
-- ("<key_prefix>:{<namespace>}"; every key below starts with it, so all share one cluster slot),
-- ARGV[1] the operation: init, reserve, settle, cancel, charge, advance or expire.
--
-- Amounts and times are decimal strings of integers (1e-8 units, nanoseconds). Lua numbers are doubles,
-- exact only up to 2^53, so figures are held as two limbs {hi, lo} = hi * 1e8 + lo (lo < 1e8): exact up
-- to 2^53 whole units of a meter (9.007e15), far beyond any budget. Everything that is not a decision
-- (prices, messages, agent states and actions) is done in Python; what Python needs to know is appended
-- as a JSON "fact" to the list <base>:ev, in the order it happened.
--
-- Keys: <base>:cfg (config fingerprint), <base>:now (the supervisor's clock), <base>:seq (reservation
-- ids), <base>:res (hash id -> reservation JSON), <base>:exp (zset id -> expiry), <base>:ev (facts),
-- <base>:applied (hash writer -> last charge applied), <base>:m:<agent> (hash of the agent's meters:
-- u:/c:/n:/f:<meter> = usage, cost, reservations, refusals), <base>:t:<agent>:<i> (hash: the agent's
-- i-th budget: static L limit, P period, W window, S soft threshold, SO soft on; then r reserved,
-- u used, pk peak, d day, ln last now, w warned, h hit, rl refusal logged, n reservations, f refusals),
-- <base>:w:<agent>:<i> (list "ts amount" of a rolling budget's window).

local BASE = KEYS[1]
local OP = ARGV[1]
local B = 100000000
local DAY_HI = 864000 -- nanoseconds per day / 1e8

local function num(s)
  if not s or s == '' then return {0, 0} end
  local n = #s
  if n <= 8 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 8)), tonumber(string.sub(s, n - 7))}
end

local function str(x)
  if x[1] == 0 then return string.format('%d', x[2]) end
  return string.format('%.0f', x[1]) .. string.format('%08d', x[2])
end

local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then return {hi + 1, lo - B} end
  return {hi, lo}
end

local function sub(a, b) -- a >= b
  local hi, lo = a[1] - b[1], a[2] - b[2]
  if lo < 0 then return {hi - 1, lo + B} end
  return {hi, lo}
end

local function cmp(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] and -1 or 1 end
  if a[2] ~= b[2] then return a[2] < b[2] and -1 or 1 end
  return 0
end

local function zero(a) return a[1] == 0 and a[2] == 0 end
local function flag(b) return b and '1' or '0' end
local function int(x) return string.format('%d', x) end

local EV, RES, EXP = BASE .. ':ev', BASE .. ':res', BASE .. ':exp'

local function emit(fact) redis.call('RPUSH', EV, cjson.encode(fact)) end

-- Budgets touched by this call, loaded once and written back once (save).
local FIELDS = {'L', 'P', 'W', 'S', 'SO', 'r', 'u', 'pk', 'd', 'ln', 'w', 'h', 'rl', 'n', 'f'}
local loaded, order = {}, {}

local function tally(agent, i)
  local key = BASE .. ':t:' .. agent .. ':' .. i
  local t = loaded[key]
  if t then return t end
  local v = redis.call('HMGET', key, unpack(FIELDS))
  if not v[1] then -- the Python side fails closed on LOST: nothing can be checked any more
    error({err = 'LOST budget ' .. i .. ' of agent ' .. agent .. ' is not in Redis under ' .. BASE ..
      ': its keys were deleted, or Redis restarted without persistence'})
  end
  t = {
    key = key, wkey = BASE .. ':w:' .. agent .. ':' .. i, agent = agent, i = i,
    L = num(v[1]), P = v[2], W = num(v[3]), S = num(v[4]), SO = v[5] == '1',
    r = num(v[6]), u = num(v[7]), pk = num(v[8]), d = tonumber(v[9]), ln = num(v[10]),
    w = v[11] == '1', h = v[12] == '1', rl = v[13] == '1', n = tonumber(v[14]), f = tonumber(v[15]),
  }
  loaded[key] = t
  order[#order + 1] = t
  return t
end

local function save()
  for _, t in ipairs(order) do
    redis.call('HSET', t.key, 'r', str(t.r), 'u', str(t.u), 'pk', str(t.pk), 'd', t.d and int(t.d) or '',
      'ln', str(t.ln), 'w', flag(t.w), 'h', flag(t.h), 'rl', flag(t.rl), 'n', int(t.n), 'f', int(t.f))
  end
end

-- BudgetBook._roll: move the period to ts (never backwards).
local function roll(t, ts)
  local now = num(ts)
  if cmp(now, t.ln) < 0 then now = t.ln end
  t.ln = now
  if t.P == 'day' then
    local d = math.floor(now[1] / DAY_HI)
    if t.d == nil then
      t.d = d
    elseif d ~= t.d then
      local freed = (not zero(t.u)) or t.h
      emit({e = 'day', a = t.agent, i = t.i, t = ts, day = int(t.d), nd = int(d), u = str(t.u),
        n = int(t.n), f = int(t.f), fr = flag(freed)})
      t.d, t.u, t.n, t.f = d, {0, 0}, 0, 0
      t.w, t.h, t.rl = false, false, false
    end
  elseif t.P == 'rolling' then
    local freed = false
    while true do
      local head = redis.call('LINDEX', t.wkey, 0)
      if not head then break end
      local gap = string.find(head, ' ', 1, true)
      if cmp(add(num(string.sub(head, 1, gap - 1)), t.W), now) > 0 then break end
      redis.call('LPOP', t.wkey)
      t.u = sub(t.u, num(string.sub(head, gap + 1)))
      freed = true
    end
    if freed and cmp(add(t.u, t.r), t.L) < 0 then
      t.h, t.rl = false, false
      t.w = cmp(t.u, t.S) >= 0
      emit({e = 'free', a = t.agent, i = t.i, t = ts, u = str(t.u)})
    end
  end
end

-- BudgetBook._thresholds
local function thresholds(t, ts)
  if not t.w and t.SO and cmp(t.u, t.S) >= 0 then
    t.w = true
    emit({e = 'soft', a = t.agent, i = t.i, t = ts, u = str(t.u)})
  end
  if not t.h and cmp(t.u, t.L) >= 0 then
    t.h = true
    emit({e = 'hit', a = t.agent, i = t.i, t = ts, u = str(t.u)})
  end
end

-- BudgetBook._charge: shares = {{i, amount}, ...} in the budget's unit (money budgets: the cost).
local function charge(agent, kind, amount, cost, ts, shares)
  local mkey = BASE .. ':m:' .. agent
  local v = redis.call('HMGET', mkey, 'u:' .. kind, 'c:' .. kind)
  redis.call('HSET', mkey, 'u:' .. kind, str(add(num(v[1]), amount)), 'c:' .. kind, str(add(num(v[2]), cost)))
  for _, s in ipairs(shares) do
    local t = tally(agent, s[1])
    roll(t, ts)
    t.u = add(t.u, s[2])
    if t.P == 'rolling' and not zero(s[2]) then redis.call('RPUSH', t.wkey, ts .. ' ' .. str(s[2])) end
    if cmp(t.u, t.pk) > 0 then t.pk = t.u end
    thresholds(t, ts)
  end
end

local function release(agent, stored)
  for _, s in ipairs(stored) do
    local t = tally(agent, s[1])
    t.r = sub(t.r, num(s[2]))
  end
end

-- ARGV[from] = count, then count pairs (budget index, amount in its unit).
local function shares_at(from)
  local out, raw = {}, {}
  for k = 1, tonumber(ARGV[from]) do
    local i, amount = ARGV[from + 2 * k - 1], ARGV[from + 2 * k]
    out[k] = {i, num(amount)}
    raw[k] = {i, amount}
  end
  return out, raw
end

local function take(id)
  local raw = redis.call('HGET', RES, id)
  if not raw then return nil end
  redis.call('HDEL', RES, id)
  redis.call('ZREM', EXP, id)
  return cjson.decode(raw)
end

if OP == 'reserve' then
  -- agent, kind, amount, cost, ts ('' = the supervisor's now), expires, shares
  local agent, kind, amount, cost = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  local ts = ARGV[6]
  if ts == '' then ts = redis.call('GET', BASE .. ':now') or '0' end
  local expires = ARGV[7]
  local shares, raw = shares_at(8)
  local budgets = {}
  for k, s in ipairs(shares) do budgets[k] = tally(agent, s[1]) end
  for _, t in ipairs(budgets) do roll(t, ts) end
  local mkey = BASE .. ':m:' .. agent
  for k, s in ipairs(shares) do
    local t, want = budgets[k], s[2]
    if cmp(add(add(want, t.u), t.r), t.L) > 0 then -- want > limit - used - reserved: refused
      redis.call('HINCRBY', mkey, 'f:' .. kind, 1)
      t.f = t.f + 1
      local logged = not t.rl
      t.rl = true
      -- spent for such a request: it would fit an empty period, not beside what was used
      local spent = cmp(want, t.L) <= 0 and cmp(t.L, add(t.u, want)) < 0
      local hit = spent and not t.h
      if hit then t.h = true end
      emit({e = 'refused', a = agent, k = kind, t = ts, i = s[1], m = amount, s = raw[k][2], u = str(t.u),
        r = str(t.r), lg = flag(logged), hit = flag(hit)})
      save()
      return {0, s[1], str(t.u), str(t.r)}
    end
  end
  for k, s in ipairs(shares) do
    local t = budgets[k]
    t.r = add(t.r, s[2])
    t.n = t.n + 1
  end
  redis.call('HINCRBY', mkey, 'n:' .. kind, 1)
  local id = redis.call('INCR', BASE .. ':seq')
  redis.call('HSET', RES, id, cjson.encode({a = agent, k = kind, m = amount, c = cost, t = ts, x = expires,
    s = raw}))
  redis.call('ZADD', EXP, expires, id)
  save()
  return {1, id}

elseif OP == 'settle' then
  -- id, agent, kind, actual, cost of actual, shares of actual
  local id, agent, kind, actual = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
  local raw = redis.call('HGET', RES, id)
  if not raw then return {0} end -- expired (charged in full) or settled already
  local res = cjson.decode(raw)
  if res.a ~= agent or res.k ~= kind then
    return redis.error_reply('reservation ' .. id .. ' is of ' .. res.a .. '/' .. res.k .. ', not ' ..
      agent .. '/' .. kind)
  end
  take(id)
  release(agent, res.s)
  if cmp(num(actual), num(res.m)) > 0 then
    emit({e = 'overrun', a = agent, k = kind, t = res.t, m = actual, r = res.m})
  end
  local shares = shares_at(7)
  charge(agent, kind, num(actual), num(ARGV[6]), res.t, shares)
  save()
  return {1}

elseif OP == 'cancel' then
  local res = take(ARGV[2])
  if not res then return {0} end
  release(res.a, res.s)
  save()
  return {1}

elseif OP == 'charge' then
  -- writer, its sequence number (a charge sent again after a lost reply is applied once), agent, kind,
  -- amount, cost, ts, shares
  local writer, seq = ARGV[2], tonumber(ARGV[3])
  local last = tonumber(redis.call('HGET', BASE .. ':applied', writer) or '0')
  if seq <= last then return {0} end
  redis.call('HSET', BASE .. ':applied', writer, ARGV[3])
  local shares = shares_at(9)
  charge(ARGV[4], ARGV[5], num(ARGV[6]), num(ARGV[7]), ARGV[8], shares)
  save()
  return {1}

elseif OP == 'advance' then
  -- ts, then (agent, budget index) of every day and rolling budget
  local ts = ARGV[2]
  redis.call('SET', BASE .. ':now', ts)
  for k = 3, #ARGV, 2 do roll(tally(ARGV[k], ARGV[k + 1]), ts) end
  save()
  return {1}

elseif OP == 'expire' then
  -- 'ttl' (expired by wall time ARGV[3]; ARGV[4]: that time plus the zset's rounding) or 'all'; why
  local all, wall, why = ARGV[2] == 'all', num(ARGV[3]), ARGV[5]
  local ids
  if all then ids = redis.call('HKEYS', RES) else ids = redis.call('ZRANGEBYSCORE', EXP, '-inf', ARGV[4]) end
  table.sort(ids, function(x, y) return tonumber(x) < tonumber(y) end)
  local count = 0
  for _, id in ipairs(ids) do
    local raw = redis.call('HGET', RES, id)
    if raw then
      local res = cjson.decode(raw)
      if all or cmp(num(res.x), wall) <= 0 then
        count = count + 1
        take(id)
        release(res.a, res.s)
        emit({e = 'expired', a = res.a, k = res.k, t = res.t, m = res.m, why = why, id = id})
        local shares = {}
        for k, s in ipairs(res.s) do shares[k] = {s[1], num(s[2])} end
        charge(res.a, res.k, num(res.m), num(res.c), res.t, shares)
      end
    end
  end
  save()
  return {count}

elseif OP == 'init' then
  -- fingerprint, start ts, then per budget: agent, index, L, P, W, S, SO
  local current = redis.call('GET', BASE .. ':cfg')
  if current then
    if current ~= ARGV[2] then return {0} end
    return {1}
  end
  redis.call('SET', BASE .. ':cfg', ARGV[2])
  redis.call('SET', BASE .. ':now', ARGV[3])
  for k = 4, #ARGV, 7 do
    redis.call('HSET', BASE .. ':t:' .. ARGV[k] .. ':' .. ARGV[k + 1], 'L', ARGV[k + 2], 'P', ARGV[k + 3],
      'W', ARGV[k + 4], 'S', ARGV[k + 5], 'SO', ARGV[k + 6], 'r', '0', 'u', '0', 'pk', '0', 'd', '',
      'ln', '0', 'w', '0', 'h', '0', 'rl', '0', 'n', '0', 'f', '0')
  end
  return {2}
end

return redis.error_reply('unknown budget operation ' .. tostring(OP))
