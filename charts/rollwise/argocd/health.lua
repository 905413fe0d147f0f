-- Argo CD health check for rollwise.io/Rollout
-- (argocd-cm: resource.customizations.health.rollwise.io_Rollout; see docs/gitops.md).
--
-- Reads the conditions rollwise writes (kstatus conventions):
--   status not written for the current generation -> Progressing
--   Stalled=True  (rolled back, aborted, invalid spec, waiting for a
--                  person longer than spec.pauseDeadline)   -> Degraded
--   Paused=True   (spec.paused, a pause step waiting for promote) -> Suspended
--   Ready=True    (all steps done, canary at 100%)          -> Healthy
--   otherwise     (Reconciling=True: moving or holding)     -> Progressing
local hs = {}

local function condition(status, type_)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function says(c)
  if c == nil then
    return ""
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if message == "" then
    return reason
  end
  if reason == "" then
    return message
  end
  return reason .. ": " .. message
end

local status = obj.status
local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local observed = nil
if status ~= nil then
  observed = status.observedGeneration
end

if status == nil or observed == nil or observed < generation then
  hs.status = "Progressing"
  hs.message = "waiting for rollwise to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled)
  return hs
end

local paused = condition(status, "Paused")
if paused ~= nil and paused.status == "True" then
  hs.status = "Suspended"
  hs.message = says(paused)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(ready)
  return hs
end

hs.status = "Progressing"
local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.message = says(reconciling)
elseif status.message ~= nil and status.message ~= "" then
  hs.message = status.message
else
  hs.message = "waiting for rollwise"
end
return hs
