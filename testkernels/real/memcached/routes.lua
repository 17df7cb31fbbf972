-- Proxy mode without backends: every get is answered by the route itself.
function mcp_config_pools(old)
    return {}
end
function mcp_config_routes(pools)
    mcp.attach(mcp.CMD_GET, function(r) return "END\r\n" end)
end
