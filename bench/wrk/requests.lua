-- Cycles through prebuilt requests, so that the client's work per request is the same for
-- every target (hello-world included): one table lookup, no string building while measuring.
--
--   wrk ... -s requests.lua URL -- METHOD PATH [HEADER VALUES_FILE]
--
-- With HEADER and VALUES_FILE, request i carries HEADER: line i of the file (cycling).
local requests = {}
local count = 0
local next_index = 0

function init(args)
    local method, path, header, file = args[1] or "GET", args[2] or "/", args[3], args[4]
    if header == nil then
        count = 1
        requests[1] = wrk.format(method, path)
        return
    end
    for line in io.lines(file) do
        if line ~= "" then
            count = count + 1
            requests[count] = wrk.format(method, path, { [header] = line })
        end
    end
    if count == 0 then
        error(file .. " holds no values")
    end
end

function request()
    next_index = next_index % count + 1
    return requests[next_index]
end
