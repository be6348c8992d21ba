-- Clusterra's job_submit/lua plugin: slurmctld refuses what the console's policy refuses, for every client.
--
-- sbatch, srun, salloc, slurmrestd and jobs submitted from inside jobs all pass through here. The rules are
-- access.policy's, applied to the snapshot the console publishes (access/snapshot.py writes POLICY_FILE);
-- the sentences are the console's own, word for word (tests/access/test_policy_plugin.py holds the two
-- together).
--
-- Decisions:
-- * Live use comes from slurmctld itself (slurm.jobs), plus the jobs accepted here that slurmctld has not
--   created yet: it calls this plugin one job at a time, but before it takes its job lock, so racing
--   submits pass here before the first of them is listed. 40 racing sbatch against a budget for 10 give
--   exactly 10, and a rebuilt Lua state (a new copy of this file) loses nothing but that short window.
--   slurm.jobs is Slurm's cache, rebuilt only when the job table changed in a later second: it is read
--   whole only by the call that finds it rebuilt, since a reused one can point at purged jobs (see
--   current_jobs; reading one crashed slurmctld 22.05).
-- * Each accepted job is stamped (admin_comment, which only root, SlurmUser and plugins can set) with what
--   it was priced at, so a queued job keeps costing what it cost when it was accepted.
-- * The snapshot holds what has been settled (used) per quota; queued, running and just-ended jobs are
--   counted here, so a console submit is counted once: as the job it becomes.
-- * Only UIDs in the console's range are governed: operators and system accounts are not the console's.
-- * Fail closed: no snapshot, a broken one, one older than its max_age (unless the cluster says "open"),
--   or an error in this script refuses a governed person's job. On 22.05/24.11 a Lua error would accept
--   the job, so every check runs under pcall.
-- * Modifies: a governed person may not raise a pending job's time limit or move it to another partition,
--   account or QOS (the job was priced as submitted); operators may. 22.05 drops the sentence of a refused
--   modify (scontrol prints only the code's text); 24.11 and 26.05 print it (tests/access/
--   test_policy_enforced_by_slurm.py checks both).
--
-- Lua 5.1 (Debian links slurmctld against liblua5.1): no integers, no goto, no bit operators.

local settings = rawget(_G, "clusterra_settings") or {}
-- Where the console writes the snapshot; root:slurm 0640 in a root:slurm 0750 directory.
local POLICY_FILE = settings.policy_file or "/etc/slurm/clusterra/policy.lua"
-- One JSON line per refusal, read back by the console's sync loop into the audit log.
local REFUSAL_LOG = settings.refusal_log or "/var/log/slurm/clusterra-refusals.log"
-- Which UIDs are governed before any snapshot exists (the console's CLUSTERRA_UID_MIN/MAX defaults).
local FALLBACK_UID_MIN = settings.uid_min or 200000
local FALLBACK_UID_MAX = settings.uid_max or 299999

local STAMP = "clusterra:v1"
local EPSILON = 1e-9

local policy = nil        -- the loaded snapshot
local policy_header = nil -- its first line, which names its version
local policy_problem = nil

-- --- the snapshot --------------------------------------------------------------------------------

local function load_policy()
    local f = io.open(POLICY_FILE, "r")
    if f == nil then
        policy, policy_header, policy_problem = nil, nil, "missing"
        return
    end
    local header = f:read("*l")
    if header ~= nil and header == policy_header and policy ~= nil then
        f:close()
        return
    end
    local rest = f:read("*a") or ""
    f:close()
    local chunk, err = loadstring(rest, "=policy")
    if chunk == nil then
        policy, policy_header, policy_problem = nil, nil, "unreadable (" .. tostring(err) .. ")"
        return
    end
    -- The snapshot is data: it runs with nothing to call.
    setfenv(chunk, {})
    local ok, value = pcall(chunk)
    if not ok or type(value) ~= "table" or type(value.people) ~= "table" then
        policy, policy_header, policy_problem = nil, nil, "unreadable"
        return
    end
    policy, policy_header, policy_problem = value, header, nil
end

local function governed(uid)
    if policy ~= nil then
        return uid >= policy.uid_min and uid <= policy.uid_max
    end
    return uid >= FALLBACK_UID_MIN and uid <= FALLBACK_UID_MAX
end

-- --- words, as access.policy says them -----------------------------------------------------------

local function count(n, unit)
    if n == 1 then return string.format("%d %s", n, unit) end
    return string.format("%d %ss", n, unit)
end

local function minutes(n)
    if n > 0 and n % 60 == 0 then return count(n / 60, "hour") end
    return count(n, "minute")
end

local function hours(x) return string.format("%.1f", x) end
local function hours_up(x) return string.format("%.1f", math.ceil(x * 10 - 1e-6) / 10) end
local function hours_down(x) return string.format("%.1f", math.floor((x or 0) * 10 + 1e-6) / 10) end

local function has(q) if q.scope == "you" then return "have" end return "has" end
local function whose(q) if q.scope == "you" then return "your quota" end return q.scope .. "'s quota" end
local function holder(q) return string.upper(string.sub(q.scope, 1, 1)) .. string.sub(q.scope, 2) end

local function memory(mb)
    return string.format("%d MB", mb)
end

-- Who asks, as access.policy says it: the job, or an array (each of its tasks is a job in Slurm).
local function subject(req)
    if req.is_array then return "This array of " .. count(req.tasks, "task") end
    return "This job"
end
local function this(req) if req.is_array then return "This array" end return "This job" end
local function each(req) if req.is_array then return "Each task of this array" end return "This job" end

local function without_throttle(inx)
    local body = string.gsub(string.match(inx or "", "^%s*(.-)%s*$"), "%%%d+$", "")
    return body
end

-- --- what a job asks for ---------------------------------------------------------------------------

local function given(value, unset)
    if value == nil or value == unset or value >= 4294967294 then return nil end
    return value
end

local function given64(value)
    -- NO_VAL64 arrives as ~1.8e19; the 2^63 flag of a per-CPU value as ~9.2e18 + MB.
    if value == nil or value >= 9.2e18 then return nil end
    return value
end

-- GPUs in one tres string: "gres:gpu:2", "gres/gpu:a100:2", "gres/gpu=2", several entries comma-separated.
local function gpus_in(tres)
    if tres == nil or tres == "" then return 0 end
    local total = 0
    for entry in string.gmatch(tres, "[^,]+") do
        local name = string.match(entry, "^gres[:/]gpu") or string.match(entry, "^gpu")
        if name then
            local n = string.match(entry, "[:=](%d+)$")
            total = total + (tonumber(n) or 1)
        end
    end
    return total
end

-- An array expression's tasks and how many may run at once: "0-15%4" is 16, 4; "1,3,5-9:2" is 5, 5.
-- nil when it cannot be read. access/arrays.py reads it the same way: items are counted as written.
local function array_tasks(inx)
    if inx == nil or inx == "" then return 1, 1 end
    local body = string.match(inx, "^%s*(.-)%s*$")
    local throttle = nil
    local limit = string.match(body, "%%(%d+)$")
    if limit ~= nil then
        throttle = tonumber(limit)
        if throttle < 1 then return nil end
        body = string.gsub(body, "%%%d+$", "")
    end
    local n = 0
    -- Every item, empty ones too ("1,,3" is not an array Slurm reads).
    for part in string.gmatch(body .. ",", "([^,]*),") do
        local a, b, step = string.match(part, "^(%d+)%-(%d+):(%d+)$")
        if a == nil then
            a, b = string.match(part, "^(%d+)%-(%d+)$")
            step = 1
        end
        if a ~= nil then
            a, b, step = tonumber(a), tonumber(b), tonumber(step)
            if b < a or step < 1 then return nil end
            n = n + math.floor((b - a) / step) + 1
        elseif string.match(part, "^%d+$") then
            n = n + 1
        else
            return nil
        end
    end
    if n == 0 then return nil end
    if throttle == nil or throttle > n then return n, n end
    return n, throttle
end

local function partitions_of(job_desc, part_list)
    local named = job_desc.partition
    local list = {}
    if named ~= nil and named ~= "" then
        for p in string.gmatch(named, "[^,]+") do table.insert(list, p) end
        return list
    end
    for name, p in pairs(part_list or {}) do
        if p.flag_default == 1 then table.insert(list, p.name or name) end
    end
    return list
end

local function request_of(job_desc, part_list)
    local parts = partitions_of(job_desc, part_list)
    local nodes = given(job_desc.min_nodes) or 1
    local tasks = given(job_desc.num_tasks)
    local per_node = given(job_desc.ntasks_per_node, 65534)
    if tasks == nil and per_node ~= nil then tasks = per_node * nodes end
    local cpt = given(job_desc.cpus_per_task, 65534) or 1
    local cpus = math.max(tasks or nodes, nodes) * cpt
    cpus = math.max(cpus, given(job_desc.min_cpus) or 1)
    local gpus = gpus_in(job_desc.tres_per_job)
        + gpus_in(job_desc.tres_per_node) * nodes
        + gpus_in(job_desc.tres_per_socket) * nodes
        + gpus_in(job_desc.tres_per_task) * (tasks or nodes)
    local mem = 0
    local per_node_mem = given64(job_desc.min_mem_per_node)
    local per_cpu_mem = given64(job_desc.min_mem_per_cpu)
    if per_node_mem ~= nil and per_node_mem > 0 then
        mem = per_node_mem * nodes
    elseif per_cpu_mem ~= nil then
        mem = per_cpu_mem * cpus
    end
    local time = given(job_desc.time_limit)
    if time == nil then
        -- What Slurm will give it: the partition's DefaultTime, else its MaxTime.
        local p = part_list and parts[1] and part_list[parts[1]]
        if p ~= nil then time = given(p.default_time) or given(p.max_time) end
    end
    local tasks, at_once = array_tasks(job_desc.array_inx)
    return {
        partitions = parts,
        partition = parts[1] or "",
        nodes = nodes,
        cpus = cpus,
        gpus = gpus,
        memory = mem,
        time_limit = time or 0,
        tasks = tasks,
        at_once = at_once,
        array = job_desc.array_inx,
        is_array = job_desc.array_inx ~= nil and job_desc.array_inx ~= "",
    }
end

-- --- live use, from slurmctld's own job table ---------------------------------------------------------

-- Jobs accepted here that slurmctld may not list yet: it calls this plugin before it takes its job lock,
-- so racing submits all pass here before the first of them is in slurm.jobs. Each is kept (by the token
-- in its stamp) until slurm.jobs lists it, or, once a newly built slurm.jobs still lacks it, ACCEPTED_TTL
-- seconds have passed (it was never created: slurmctld refused it for a reason of its own after this
-- plugin said yes).
local ACCEPTED_TTL = 30
local accepted = {}
local accepted_count = 0

local function stamped(job)
    local c = job.admin_comment
    if c == nil then return nil end
    local cpus, gpus, mins, token =
        string.match(c, "^" .. STAMP .. " cpus=(%d+) gpus=(%d+) minutes=(%d+) n=([%w.]+)")
    if cpus == nil then
        cpus, gpus, mins = string.match(c, "^" .. STAMP .. " cpus=(%d+) gpus=(%d+) minutes=(%d+)")
    end
    if cpus == nil then return nil end
    return tonumber(cpus), tonumber(gpus), tonumber(mins), token
end

local function remember(uid, req)
    accepted_count = accepted_count + 1
    local token = string.format("%d.%d", os.time(), accepted_count)
    accepted[token] = {
        uid = uid, cpus = req.cpus, gpus = req.gpus, minutes = req.time_limit, tasks = req.tasks,
        at_once = req.at_once, at = os.time(),
    }
    return token
end

-- What a job holds: (cpus, gpus, minutes) it was priced at, and its stamp's token if it has one.
local function price(job)
    local cpus, gpus, mins, token = stamped(job)
    if cpus == nil then
        cpus, gpus, mins = job.total_cpus or 1, 0, given(job.time_limit) or 0
        if cpus == 0 then cpus = 1 end
    end
    return cpus, gpus, mins, token
end

-- slurm.jobs is a cache, and reading it at the wrong moment crashes slurmctld. job_submit_lua.c rebuilds
-- it at a call only when slurmctld's job table changed in a later second than the last rebuild (it compares
-- two time_t); otherwise every call gets the same table, which then lacks jobs created since and can still
-- hold jobs purged since: their entries point at freed memory, and 22.05.8 died in
-- slurm_lua_job_record_field reading one's admin_comment (bench row 1, 2026-12-07). A purge takes only jobs
-- that ended at least MinJobAge (never under 2 s) before, so a job that had not ended when the table was
-- built is still in slurmctld while the table is reused. Hence: the call that finds a new table (this
-- plugin sees every call that can build one: submit, modify, a reload) reads it whole and keeps what later
-- calls need of it: where the governed people's unfinished jobs are (read again, live, at every call) and
-- what their ended jobs used (fixed once ended). A reused table is never read past those entries.
local jobs_table = nil   -- the slurm.jobs last seen
local jobs_read = false  -- whether it was read whole (an error midway leaves it unusable: fail closed)
local unfinished = {}    -- its key -> uid: a governed person's job that had not ended when it was built
local ended = {}         -- {uid, ended_at, cpu, gpu, token}: a governed person's job that had ended then

-- An ended job's use: what it ran, at what it was priced (nothing if it never started).
local function ended_use(job, uid)
    local start, finish = job.start_time or 0, job.end_time or 0
    local cpus, gpus, _, token = price(job)
    local ran = 0
    if start > 0 then ran = math.max(0, finish - start) / 3600 end
    return {uid = uid, ended_at = finish, cpu = ran * cpus, gpu = ran * gpus, token = token}
end

-- slurm.jobs now, and whether this call is the one that found it built (so all of it is current).
local function current_jobs()
    local jobs = slurm.jobs or {}
    if jobs == jobs_table then
        if not jobs_read then error("slurmctld's job list could not be read when it was built") end
        return jobs, false
    end
    jobs_table, jobs_read, unfinished, ended = jobs, false, {}, {}
    for key, job in pairs(jobs) do
        local uid = job.user_id
        if uid ~= nil and governed(uid) then
            if (job.job_state or 0) % 256 < 3 then  -- PENDING, RUNNING, SUSPENDED
                unfinished[key] = uid
            else
                table.insert(ended, ended_use(job, uid))
            end
        end
    end
    jobs_read = true
    return jobs, true
end

-- Per quota: running jobs, queued jobs, and the CPU-/GPU-hours they hold (queued and running jobs at their
-- stamped worst case; jobs that ended after the snapshot's settled_through at what they really ran).
local function live_use(quotas, jobs, built)
    local of_uid = {}
    local totals = {}
    for _, q in ipairs(quotas) do
        totals[q] = {running = 0, queued = 0, cpu = 0, gpu = 0}
        for _, uid in ipairs(q.members or {}) do
            of_uid[uid] = of_uid[uid] or {}
            table.insert(of_uid[uid], totals[q])
        end
    end
    local function add(uid, running, queued, cpu_h, gpu_h)
        for _, t in ipairs(of_uid[uid]) do
            t.running = t.running + running
            t.queued = t.queued + queued
            t.cpu = t.cpu + cpu_h
            t.gpu = t.gpu + gpu_h
        end
    end
    local settled = policy.settled_through or 0
    local seen = {}
    for key, uid in pairs(unfinished) do
        if of_uid[uid] ~= nil then
            local job = jobs[key]
            local base = (job.job_state or 0) % 256
            local cpus, gpus, mins, token = price(job)
            if token ~= nil then seen[token] = true end
            if base == 0 then
                local n = given(job.array_task_cnt) or 1
                if n < 1 then n = 1 end
                add(uid, 0, n, n * mins / 60 * cpus, n * mins / 60 * gpus)
            elseif base == 1 or base == 2 then
                add(uid, 1, 0, mins / 60 * cpus, mins / 60 * gpus)
            else
                local e = ended_use(job, uid)
                if e.ended_at > settled then add(uid, 0, 0, e.cpu, e.gpu) end
            end
        end
    end
    for _, e in ipairs(ended) do
        if of_uid[e.uid] ~= nil then
            if e.token ~= nil then seen[e.token] = true end
            if e.ended_at > settled then add(e.uid, 0, 0, e.cpu, e.gpu) end
        end
    end
    -- Accepted jobs not listed: queued, as far as this plugin knows. Missing from a reused table they may
    -- have started since (in the second it was built), so they count as running too: a refusal in that
    -- moment rather than a second running job past the limit. Only a newly built table can show that one
    -- was never created.
    local now = os.time()
    for token, a in pairs(accepted) do
        if seen[token] or (built and now - a.at > ACCEPTED_TTL) then
            accepted[token] = nil
        elseif of_uid[a.uid] ~= nil then
            local running = 0
            if not built then running = math.min(a.tasks, a.at_once or a.tasks) end
            add(a.uid, running, a.tasks, a.tasks * a.minutes / 60 * a.cpus, a.tasks * a.minutes / 60 * a.gpus)
        end
    end
    return totals
end

-- --- the checks, in access.policy's order ---------------------------------------------------------

local PER_JOB = {
    {"max_nodes", "max_nodes", "nodes", "node"},
    {"max_cpus", "max_cpus", "cpus", "CPU"},
    {"max_gpus", "max_gpus", "gpus", "GPU"},
}

local function quota_list(person)
    local list = {}
    for _, id in ipairs(person.quotas or {}) do
        local q = policy.quotas[id]
        if q ~= nil then table.insert(list, q) end
    end
    return list
end

local function needs_time_limit(q, req)
    if q.max_walltime ~= nil then return "check its walltime limit" end
    if q.gpu_limit ~= nil and req.gpus > 0 then return "reserve GPU-hours" end
    if q.cpu_limit ~= nil then return "reserve CPU-hours" end
    return nil
end

local function partition_problem(person, req, where)
    if person.all_partitions then return nil end
    local granted = {}
    for _, p in ipairs(person.partitions or {}) do granted[p] = true end
    local allowed
    if #(person.partitions or {}) > 0 then
        allowed = "your access allows " .. table.concat(person.partitions, ", ")
    else
        allowed = "your access allows no partition there"
    end
    if #req.partitions == 0 then
        return "This job names no partition; " .. allowed .. ", so name one of them."
    end
    for _, p in ipairs(req.partitions) do
        if not granted[p] then
            return "You may not submit to partition " .. p .. " on " .. where .. "; " .. allowed .. "."
        end
    end
    return nil
end

local function member(list, value)
    for _, v in ipairs(list or {}) do if v == value then return true end end
    return false
end

-- Accounts and QOS beyond the cluster's defaults only as a grant names them (the snapshot lists them all).
local function account_problem(person, job_desc, where)
    local account = job_desc.account
    if account ~= nil and account ~= "" and not member(person.accounts, account) then
        return "You may not charge Slurm account " .. account .. " on " .. where .. "; your access allows "
            .. table.concat(person.accounts or {}, ", ") .. "."
    end
    local qos = job_desc.qos
    if qos ~= nil and qos ~= "" and not member(person.qos, qos) then
        local allowed = "your access allows only the default QOS"
        if #(person.qos or {}) > 0 then allowed = "your access allows " .. table.concat(person.qos, ", ") end
        return "You may not use QOS " .. qos .. " on " .. where .. "; " .. allowed .. "."
    end
    return nil
end

-- Returns (code, sentence) for a refusal, or nil and the request for an acceptance.
local function decide(job_desc, part_list, jobs, built)
    local uid = job_desc.user_id
    local where = policy.cluster
    local person = policy.people[uid]
    if person == nil then
        return "no_grant", "You have no access to " .. where .. "; ask an administrator for a grant."
    end
    if person.inactive then
        return "inactive", "Your account " .. person.console_name .. " is deactivated, so you cannot use "
            .. where .. "; ask an administrator if this is a mistake."
    end
    if not policy.enabled then
        return "cluster_disabled", where .. " is turned off in the console; ask an administrator when it will be back."
    end
    local req = request_of(job_desc, part_list)
    local problem = partition_problem(person, req, where)
    if problem then return "partition_not_granted", problem end
    problem = account_problem(person, job_desc, where)
    if problem then return "account_not_granted", problem end
    if req.tasks == nil then
        return "array_unreadable", "This job's array " .. tostring(job_desc.array_inx) .. " cannot be priced "
            .. "by the console's policy; write it as ranges such as 0-15 or 1,3,5-9:2."
    end

    local on = "on " .. where
    local quotas = quota_list(person)
    for _, check in ipairs(PER_JOB) do
        for _, q in ipairs(quotas) do
            local limit, asked = q[check[2]], req[check[3]]
            if limit ~= nil and asked > limit then
                return check[1], each(req) .. " asks for " .. count(asked, check[4]) .. "; " .. whose(q)
                    .. " allows at most " .. count(limit, check[4]) .. " per job " .. on .. "."
            end
        end
    end
    for _, q in ipairs(quotas) do
        if q.max_memory ~= nil and req.memory > q.max_memory then
            return "max_memory", each(req) .. " asks for " .. memory(req.memory) .. " of memory; " .. whose(q)
                .. " allows at most " .. memory(q.max_memory) .. " per job " .. on .. "."
        end
    end
    if req.time_limit == 0 then
        for _, q in ipairs(quotas) do
            local need = needs_time_limit(q, req)
            if need then
                return "walltime_required", this(req) .. " sets no time limit, and " .. whose(q) .. " " .. on
                    .. " needs one to " .. need .. "; give the job a time limit."
            end
        end
    end
    for _, q in ipairs(quotas) do
        if q.max_walltime ~= nil and req.time_limit > q.max_walltime then
            return "max_walltime", each(req) .. " asks for " .. minutes(req.time_limit) .. " of walltime; " .. whose(q)
                .. " allows at most " .. minutes(q.max_walltime) .. " per job " .. on .. "."
        end
    end

    local live = live_use(quotas, jobs, built)
    for _, q in ipairs(quotas) do
        local n = live[q].running
        if q.max_running ~= nil and n >= q.max_running then
            return "max_running_jobs", holder(q) .. " already " .. has(q) .. " " .. n .. " of " .. q.max_running
                .. " allowed jobs running " .. on .. "; wait for one to finish."
        end
    end
    -- An array runs up to at_once tasks together, each a running job: a throttle above the limit itself
    -- could never be honoured, whatever else is running.
    for _, q in ipairs(quotas) do
        if q.max_running ~= nil and req.at_once > q.max_running then
            return "max_running_jobs", "This array would run up to " .. req.at_once .. " tasks at once; "
                .. whose(q) .. " allows " .. count(q.max_running, "running job") .. " " .. on
                .. "; add a throttle such as --array=" .. without_throttle(req.array) .. "%" .. q.max_running .. "."
        end
    end
    for _, q in ipairs(quotas) do
        local n = live[q].queued
        if q.max_queued ~= nil and n + req.tasks > q.max_queued then
            local rest = "; wait for one to start."
            if req.is_array then
                rest = ", and this array adds " .. req.tasks .. "; submit fewer tasks or wait for some to start."
            end
            return "max_queued_jobs", holder(q) .. " already " .. has(q) .. " " .. n .. " of " .. q.max_queued
                .. " allowed jobs queued " .. on .. rest
        end
    end
    local asked = {
        gpu = req.tasks * req.time_limit / 60 * req.gpus,
        cpu = req.tasks * req.time_limit / 60 * req.cpus,
    }
    for _, kind in ipairs({"gpu", "cpu"}) do
        for _, q in ipairs(quotas) do
            local limit = q[kind .. "_limit"]
            if limit ~= nil then
                local left = math.max(0, limit - (q[kind .. "_used"] or 0) - live[q][kind])
                if asked[kind] > left + EPSILON then
                    return kind .. "_budget", subject(req) .. " asks for " .. hours_up(asked[kind]) .. " "
                        .. string.upper(kind) .. "-hours; " .. q.scope .. " " .. has(q) .. " " .. hours_down(left)
                        .. " of " .. hours(limit) .. " left " .. q.period_words .. ", renewing on "
                        .. q.renews_words .. "."
                end
            end
        end
    end
    return nil, req
end

-- --- telling the person, and the console -----------------------------------------------------------

-- ASCII only (bytes past 127 as \u00XX), so the console can count the log in bytes whatever people name jobs.
local function json_string(s)
    s = tostring(s or "")
    s = string.gsub(s, '[%c"\\\128-\255]', function(c)
        if c == '"' then return '\\"' end
        if c == "\\" then return "\\\\" end
        return string.format("\\u%04x", string.byte(c))
    end)
    return '"' .. s .. '"'
end

local function note_refusal(job_desc, code, sentence)
    local env = job_desc.environment
    local inside = env and env.SLURM_JOB_ID or nil
    local line = "{" .. table.concat({
        '"time":' .. string.format("%d", os.time()),
        '"uid":' .. string.format("%d", job_desc.user_id or -1),
        '"user":' .. json_string(job_desc.user_name),
        '"code":' .. json_string(code),
        '"message":' .. json_string(sentence),
        '"partition":' .. json_string(job_desc.partition),
        '"name":' .. json_string(job_desc.name),
        '"inside_job":' .. json_string(inside),
        '"version":' .. string.format("%d", (policy and policy.version) or 0),
    }, ",") .. "}\n"
    local f = io.open(REFUSAL_LOG, "a")
    if f ~= nil then
        f:write(line)
        f:close()
    end
end

local CODES = {
    no_grant = "ESLURM_ACCESS_DENIED",
    inactive = "ESLURM_ACCESS_DENIED",
    cluster_disabled = "ESLURM_ACCESS_DENIED",
    partition_not_granted = "ESLURM_ACCESS_DENIED",
    account_not_granted = "ESLURM_INVALID_ACCOUNT",
    max_walltime = "ESLURM_INVALID_TIME_LIMIT",
    walltime_required = "ESLURM_MISSING_TIME_LIMIT",
}

local function refuse(job_desc, code, sentence)
    -- user_msg, never log_user: a % in a sentence would be a format error, and on 22.05 an error accepts.
    slurm.user_msg(sentence)
    pcall(note_refusal, job_desc, code, sentence)
    local name = CODES[code] or "ESLURM_ACCOUNTING_POLICY"
    return slurm[name] or slurm.ERROR
end

local function staleness()
    local age = os.time() - (policy.generated_at or 0)
    if policy.max_age == nil or age <= policy.max_age then return nil end
    return "The console's policy for " .. policy.cluster .. " is " .. minutes(math.floor(age / 60))
        .. " old, past its limit of " .. minutes(math.floor(policy.max_age / 60)) .. ", and the console has not "
        .. "published a newer one"
end

local function submit(job_desc, part_list)
    load_policy()
    -- Every call, whoever submits: the call that finds slurm.jobs built must read it (see current_jobs).
    local jobs, built = current_jobs()
    local uid = job_desc.user_id
    if uid == nil or not governed(uid) then return slurm.SUCCESS end
    if policy == nil then
        return refuse(job_desc, "no_policy", "This cluster has no " .. (policy_problem == "missing" and "" or "readable ")
            .. "policy from the Clusterra console yet, so jobs of console accounts are refused; ask an administrator.")
    end
    local stale = staleness()
    if stale ~= nil then
        if policy.when_stale ~= "open" then
            return refuse(job_desc, "policy_stale", stale .. "; jobs are refused until it does. Ask an administrator.")
        end
        slurm.user_msg(stale .. "; this job is let through unchecked.")
        return slurm.SUCCESS
    end
    local code, result = decide(job_desc, part_list, jobs, built)
    if code ~= nil then return refuse(job_desc, code, result) end
    local req = result
    local token = remember(job_desc.user_id, req)
    job_desc.admin_comment =
        string.format("%s cpus=%d gpus=%d minutes=%d n=%s", STAMP, req.cpus, req.gpus, req.time_limit, token)
    return slurm.SUCCESS
end

local function modify(job_desc, job_rec, part_list, modify_uid)
    load_policy()
    current_jobs()  -- slurmctld may have built slurm.jobs for this call: the next submit must know
    if modify_uid == nil or not governed(modify_uid) then return slurm.SUCCESS end
    local what = nil
    local new_time = given(job_desc.time_limit)
    if new_time ~= nil and new_time > (given(job_rec.time_limit) or 0) then what = "raise its time limit" end
    if job_desc.partition ~= nil and job_desc.partition ~= job_rec.partition then what = "move it to another partition" end
    if job_desc.account ~= nil and job_desc.account ~= job_rec.account then what = "charge it to another account" end
    if job_desc.qos ~= nil then what = "change its QOS" end
    if job_desc.admin_comment ~= nil then what = "change its admin comment" end
    if what == nil then return slurm.SUCCESS end
    local sentence = "A queued job was priced by the console's policy as it was submitted, so you cannot " .. what
        .. "; cancel it and submit it again."
    return refuse(job_desc, "modify_refused", sentence)
end

-- --- what slurmctld calls -----------------------------------------------------------------------------

function slurm_job_submit(job_desc, part_list, submit_uid)
    local ok, rc = pcall(submit, job_desc, part_list)
    if ok then return rc end
    slurm.log_error("clusterra job_submit: %s", tostring(rc))
    if job_desc.user_id ~= nil and governed(job_desc.user_id) then
        slurm.user_msg("The console's policy check failed on this cluster, so the job is refused; ask an administrator.")
        return slurm.ERROR
    end
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    local ok, rc = pcall(modify, job_desc, job_rec, part_list, modify_uid)
    if ok then return rc end
    slurm.log_error("clusterra job_modify: %s", tostring(rc))
    if modify_uid ~= nil and governed(modify_uid) then return slurm.ERROR end
    return slurm.SUCCESS
end

return slurm.SUCCESS
