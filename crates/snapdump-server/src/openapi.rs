//! `GET /openapi.json`: the OpenAPI 3.0 description of every route, kept beside the handlers
//! and checked against real responses by the tests (`tests/openapi.rs`).

use axum::Json;
use serde_json::{Value, json};

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    })
}

fn unauthorized() -> Value {
    json!({
        "description": "No key, or a wrong one; `WWW-Authenticate: Bearer` tells the scheme.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    })
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn text_response(description: &str) -> Value {
    json!({"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}})
}

fn selector_parameters() -> Vec<Value> {
    vec![
        json!({"name": "pid", "in": "query", "required": false,
               "description": "The process id. Without pid and name: the only dumpable process.",
               "schema": {"type": "integer", "format": "int32", "minimum": 1}}),
        json!({"name": "uid", "in": "query", "required": false,
               "description": "The .NET runtime instance cookie (a GUID, as in /processes; .NET 5 and later with diagnostics enabled). One that is not a GUID, or that no process has: 400.",
               "schema": {"type": "string", "format": "uuid"}}),
        json!({"name": "name", "in": "query", "required": false,
               "description": "The process name: comm, executable file name or argv[0].",
               "schema": {"type": "string"}}),
    ]
}

/// The document.
pub fn document() -> Value {
    let location = json!({"description": "The operation: `/operations/{id}`.",
                          "schema": {"type": "string"}});
    let mut dump_parameters = selector_parameters();
    dump_parameters.extend([
        json!({"name": "type", "in": "query", "required": false,
               "description": "What goes in: Mini (threads, stacks), WithHeap (the default: plus heap and written data), Full (everything), Triage (Mini without what identifies the run: the command line keeps only argv[0] and the environment is left out, blanked in memory at the top of the main thread's stack, in the process notes and in the minidump's LinuxCmdLine and LinuxEnviron streams; registers, stacks and modules are kept).",
               "schema": {"type": "string", "enum": ["Mini", "WithHeap", "Triage", "Full"], "default": "WithHeap"}}),
        json!({"name": "format", "in": "query", "required": false,
               "schema": {"type": "string", "enum": ["elf", "minidump"], "default": "elf"}}),
        json!({"name": "egressProvider", "in": "query", "required": false,
               "description": "Upload to this configured provider (202) instead of streaming (200).",
               "schema": {"type": "string"}}),
        json!({"name": "tags", "in": "query", "required": false,
               "description": "Comma-separated tags for the operation and the object's metadata.",
               "schema": {"type": "string"}}),
    ]);
    let tags_parameter = json!({"name": "tags", "in": "query", "required": false,
        "description": "Only operations carrying all these comma-separated tags.",
        "schema": {"type": "string"}});
    let id_parameter = json!({"name": "id", "in": "path", "required": true,
        "schema": {"type": "string", "format": "uuid"}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "snapdump",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Dumps of live Linux processes over HTTP, shaped like dotnet-monitor's API."
        },
        "security": [{"ApiKey": []}],
        "paths": {
            "/processes": {"get": {
                "operationId": "getProcesses",
                "summary": "The user-space processes, dumpable or not.",
                "responses": {
                    "200": json_response("The processes.", json!({"type": "array", "items": {"$ref": "#/components/schemas/Process"}})),
                    "400": problem_response("An unknown query parameter."),
                    "401": unauthorized()
                }
            }},
            "/process": {"get": {
                "operationId": "getProcess",
                "summary": "One process, by pid, uid or name, or the only dumpable one.",
                "parameters": selector_parameters(),
                "responses": {
                    "200": json_response("The process.", json!({"$ref": "#/components/schemas/ProcessInfo"})),
                    "400": problem_response("Bad pid or uid, no such process, ambiguous name, several selectors, or no default process."),
                    "401": unauthorized()
                }
            }},
            "/dump": {"get": {
                "operationId": "captureDump",
                "summary": "Dump a process: streamed (200), or uploaded to an egress provider (202).",
                "parameters": dump_parameters,
                "responses": {
                    "200": {
                        "description": "The dump, streamed (chunked).",
                        "headers": {
                            "Location": location,
                            "Content-Disposition": {"schema": {"type": "string"}}
                        },
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
                    },
                    "202": {"description": "The upload has started; follow Location.", "headers": {"Location": location}},
                    "400": problem_response("Bad input: unknown type or format, bad pid or uid, no such process, unknown egress provider, a process that cannot be dumped."),
                    "401": unauthorized(),
                    "403": problem_response("Not allowed to trace the process."),
                    "409": problem_response("The process is traced by another tracer, or exited."),
                    "429": problem_response("As many dumps as allowed are under way."),
                    "503": problem_response("The dump was cancelled before its first byte."),
                    "500": problem_response("The dump failed inside the server.")
                }
            }},
            "/operations": {"get": {
                "operationId": "getOperations",
                "parameters": [tags_parameter],
                "responses": {
                    "200": json_response("The operations, oldest first.", json!({"type": "array", "items": {"$ref": "#/components/schemas/Operation"}})),
                    "400": problem_response("Bad tags or an unknown parameter."),
                    "401": unauthorized()
                }
            }},
            "/operations/{id}": {
                "get": {
                    "operationId": "getOperation",
                    "parameters": [id_parameter.clone()],
                    "responses": {
                        "200": json_response("The operation.", json!({"$ref": "#/components/schemas/Operation"})),
                        "401": unauthorized(),
                        "404": problem_response("No such operation.")
                    }
                },
                "delete": {
                    "operationId": "cancelOperation",
                    "summary": "Cancel a running dump: the target is released and nothing is kept.",
                    "parameters": [id_parameter],
                    "responses": {
                        "202": {"description": "Cancelling; the operation turns Cancelled."},
                        "400": problem_response("The operation is not running."),
                        "401": unauthorized(),
                        "404": problem_response("No such operation.")
                    }
                }
            },
            "/collectionrules": {"get": {
                "operationId": "getCollectionRules",
                "summary": "The config's collection rules, by name: state, dumps taken, last error.",
                "responses": {
                    "200": json_response("The rules.", json!({"type": "array", "items": {"$ref": "#/components/schemas/CollectionRule"}})),
                    "400": problem_response("An unknown query parameter."),
                    "401": unauthorized()
                }
            }},
            "/collectionrules/{name}": {"get": {
                "operationId": "getCollectionRule",
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                "responses": {
                    "200": json_response("The rule.", json!({"$ref": "#/components/schemas/CollectionRule"})),
                    "401": unauthorized(),
                    "404": problem_response("No rule of that name.")
                }
            }},
            "/info": {"get": {
                "operationId": "getInfo",
                "responses": {
                    "200": json_response("About this server.", json!({"$ref": "#/components/schemas/Info"})),
                    "401": unauthorized()
                }
            }},
            "/metrics": {"get": {
                "operationId": "getMetrics",
                "summary": "Prometheus text exposition.",
                "responses": {"200": text_response("The metrics."), "401": unauthorized()}
            }},
            "/openapi.json": {"get": {
                "operationId": "getOpenApi",
                "responses": {
                    "200": json_response("This document.", json!({"type": "object"})),
                    "401": unauthorized()
                }
            }},
            "/livez": {"get": {
                "operationId": "getLivez",
                "security": [],
                "responses": {"200": text_response("Healthy.")}
            }},
            "/readyz": {"get": {
                "operationId": "getReadyz",
                "security": [],
                "responses": {"200": text_response("Healthy.")}
            }}
        },
        "components": {
            "securitySchemes": {
                "ApiKey": {"type": "http", "scheme": "bearer",
                           "description": "A key from `snapdump generatekey` or `--temp-apikey`."}
            },
            "schemas": {
                "ProblemDetails": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "code": {"type": "string"}
                    }
                },
                "Process": {
                    "type": "object",
                    "required": ["pid", "uid", "name", "exeName", "commandLine", "userId", "threads", "rssBytes", "dumpable", "notDumpableReason", "isDefault"],
                    "properties": {
                        "pid": {"type": "integer"},
                        "uid": {"type": "string", "format": "uuid", "nullable": true,
                                "description": "The .NET runtime instance cookie (for .NET Core 3.1, which has none, a stable one snapdump makes from the pid and the diagnostics socket key); null for other processes."},
                        "name": {"type": "string"},
                        "exeName": {"type": "string", "nullable": true},
                        "commandLine": {"type": "string"},
                        "userId": {"type": "integer"},
                        "threads": {"type": "integer"},
                        "rssBytes": {"type": "integer"},
                        "dumpable": {"type": "boolean"},
                        "notDumpableReason": {"type": "string", "nullable": true},
                        "isDefault": {"type": "boolean"}
                    }
                },
                "ProcessInfo": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Process"},
                        {
                            "type": "object",
                            "required": ["operatingSystem", "processArchitecture"],
                            "properties": {
                                "operatingSystem": {"type": "string"},
                                "processArchitecture": {"type": "string"}
                            }
                        }
                    ]
                },
                "Operation": {
                    "type": "object",
                    "required": ["operationId", "createdDateTime", "status", "isStoppable", "process", "egressProviderName", "resourceLocation", "resourceBytes", "resourceSha256", "tags", "error", "type", "format"],
                    "properties": {
                        "operationId": {"type": "string", "format": "uuid"},
                        "createdDateTime": {"type": "string", "format": "date-time"},
                        "status": {"type": "string", "enum": ["Running", "Succeeded", "Failed", "Cancelled"]},
                        "isStoppable": {"type": "boolean"},
                        "process": {
                            "type": "object",
                            "required": ["pid", "name"],
                            "properties": {"pid": {"type": "integer"}, "name": {"type": "string"}}
                        },
                        "egressProviderName": {"type": "string", "nullable": true},
                        "resourceLocation": {"type": "string", "nullable": true},
                        "resourceBytes": {"type": "integer", "format": "int64", "nullable": true},
                        "resourceSha256": {"type": "string", "nullable": true},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "error": {
                            "type": "object",
                            "nullable": true,
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                        },
                        "type": {"type": "string", "enum": ["Mini", "WithHeap", "Triage", "Full"]},
                        "format": {"type": "string", "enum": ["elf", "minidump"]}
                    }
                },
                "CollectionRule": {
                    "type": "object",
                    "required": ["name", "state", "stateReason", "process", "triggers", "type", "format", "egressProviderName", "dumpLimit", "dumpsTaken", "dumpsStored", "lastOperationId", "lastDumpTime", "lastError"],
                    "properties": {
                        "name": {"type": "string"},
                        "state": {"type": "string", "enum": ["Running", "Finished", "Failed"]},
                        "stateReason": {"type": "string"},
                        "process": {
                            "type": "object",
                            "nullable": true,
                            "required": ["pid", "name"],
                            "properties": {"pid": {"type": "integer"}, "name": {"type": "string"}}
                        },
                        "triggers": {"type": "string"},
                        "type": {"type": "string", "enum": ["Mini", "WithHeap", "Triage", "Full"]},
                        "format": {"type": "string", "enum": ["elf", "minidump"]},
                        "egressProviderName": {"type": "string"},
                        "dumpLimit": {"type": "integer"},
                        "dumpsTaken": {"type": "integer"},
                        "dumpsStored": {"type": "integer"},
                        "lastOperationId": {"type": "string", "format": "uuid", "nullable": true},
                        "lastDumpTime": {"type": "string", "format": "date-time", "nullable": true},
                        "lastError": {
                            "type": "object",
                            "nullable": true,
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                        }
                    }
                },
                "Info": {
                    "type": "object",
                    "required": ["name", "version", "pid", "operatingSystem", "processArchitecture", "authentication", "maxConcurrentDumps", "dumpsInProgress", "egressProviders"],
                    "properties": {
                        "name": {"type": "string"},
                        "version": {"type": "string"},
                        "pid": {"type": "integer"},
                        "operatingSystem": {"type": "string"},
                        "processArchitecture": {"type": "string"},
                        "authentication": {"type": "string", "enum": ["ApiKey", "None"]},
                        "maxConcurrentDumps": {"type": "integer"},
                        "dumpsInProgress": {"type": "integer"},
                        "egressProviders": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "type"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "type": {"type": "string", "enum": ["file", "s3", "azureBlob"]}
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

pub async fn get_openapi() -> Json<Value> {
    Json(document())
}
