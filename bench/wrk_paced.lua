-- A paced load: each connection waits `pause` ms on average (the first argument after `--`)
-- before each request, so the server is measured below saturation, where latency is its own
-- and not queueing behind 49 other connections. wrk starts a request's clock after the pause.
-- Pauses are drawn from 1 .. 2*pause-1 ms (wrk's timers count whole ms): equal pauses would
-- keep the 50 connections in step and turn the load into bursts of 50.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "wrk_report.lua")

local pause = 2
init = function(args)
  if args[1] then pause = tonumber(args[1]) end
end
delay = function()
  return math.random(1, math.max(1, 2 * pause - 1))
end
