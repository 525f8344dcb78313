#!/usr/bin/env python3
"""Checks template.yaml and events/ against the contract the Rust code relies on.

cfn-lint checks that the template is valid CloudFormation/SAM; this checks that it is *our*
template: table keys, GSI and TTL attribute, queue and DLQ names, redrive, visibility timeout
against the worker timeout, partial batch failures, function settings, the environment
variables (resource names and every variable shared/core/src/config.rs reads), and that every
event in events/ is well formed and routed by the template and the router.

Run by tests/template/lint.sh with the project venv's Python (it needs cfn-lint, whose YAML
decoder understands the short CloudFormation tags such as !Ref and !Sub).

Usage: check_template.py [REPO_ROOT]
"""

from __future__ import annotations

import base64
import glob
import json
import os
import re
import sys

from cfnlint.decode import decode

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))

BANDS = ("high", "normal", "low")
FUNCTIONS = {"ApiFunction": "vacal-api", "WorkerFunction": "vacal-worker", "JanitorFunction": "vacal-janitor"}
# Resource environment of every function (the AWS adapters read exactly these names).
RESOURCE_ENV = {
    "JOBS_TABLE": "JobsTable",
    "RESULTS_BUCKET": "ResultsBucket",
    "QUEUE_URL_HIGH": "HighQueue",
    "QUEUE_URL_NORMAL": "NormalQueue",
    "QUEUE_URL_LOW": "LowQueue",
    "DLQ_URL_HIGH": "HighDeadLetterQueue",
    "DLQ_URL_NORMAL": "NormalDeadLetterQueue",
    "DLQ_URL_LOW": "LowDeadLetterQueue",
}
API_ROUTE_KEYS = {"ANY /api/v1/{proxy+}", "ANY /", "$default"}

failures: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        failures.append(message)


def plain(value):
    """The template node as plain dicts/lists/strings (cfn-lint's decoder returns subclasses)."""
    return json.loads(json.dumps(value, default=str))


def load_template() -> dict:
    template, matches = decode(os.path.join(ROOT, "template.yaml"))
    if matches:
        for m in matches:
            print(f"template.yaml: {m}", file=sys.stderr)
        sys.exit(1)
    return plain(template)


def resolve(value, params: dict):
    """A literal, or a parameter's default through {"Ref": param}."""
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in params:
        return params[value["Ref"]].get("Default")
    return value


def sub(value) -> str | None:
    """The string of an Fn::Sub written as a plain string, else None."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return value["Fn::Sub"]
    return None


def config_variables() -> list[str]:
    """Every environment variable name shared/core/src/config.rs reads."""
    path = os.path.join(ROOT, "shared", "core", "src", "config.rs")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    source = source.split("#[cfg(test)]")[0]
    names = set(re.findall(r'number::<[^>]+>\(\s*vars,\s*"([A-Z0-9_]+)"', source))
    names |= set(re.findall(r'vars\s*\.get\(\s*"([A-Z0-9_]+)"\s*\)', source))
    check(len(names) >= 10, f"config.rs: found only {sorted(names)}; has the parsing changed?")
    return sorted(names)


def router_routes() -> list[tuple[str, re.Pattern]]:
    """(method, path regex) for every entry of vacal_http::ROUTES."""
    path = os.path.join(ROOT, "shared", "http", "src", "lib.rs")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    block = re.search(r"pub const ROUTES[^=]*=\s*\[(.*?)\];", source, re.S)
    check(block is not None, "shared/http/src/lib.rs: ROUTES not found")
    routes = []
    for method, route in re.findall(r'\("([A-Z]+)",\s*"([^"]+)"\)', block.group(1) if block else ""):
        pattern = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(route)) + "$"
        routes.append((method, route, re.compile(pattern)))
    check(len(routes) > 10, f"ROUTES: found only {len(routes)} routes")
    return routes


def check_table(res: dict) -> None:
    table = res.get("JobsTable", {})
    check(table.get("Type") == "AWS::DynamoDB::Table", "JobsTable: missing or not a DynamoDB table")
    p = table.get("Properties", {})
    check(sub(p.get("TableName")) == "${AWS::StackName}-jobs", "JobsTable: TableName must be ${AWS::StackName}-jobs")
    check(p.get("BillingMode") == "PAY_PER_REQUEST", "JobsTable: BillingMode must be PAY_PER_REQUEST")
    attrs = {a["AttributeName"]: a["AttributeType"] for a in p.get("AttributeDefinitions", [])}
    check(attrs == {"pk": "S", "sk": "S", "gsi1pk": "S", "gsi1sk": "S"},
          f"JobsTable: attribute definitions must be pk, sk, gsi1pk, gsi1sk (S), got {attrs}")
    keys = [(k["AttributeName"], k["KeyType"]) for k in p.get("KeySchema", [])]
    check(keys == [("pk", "HASH"), ("sk", "RANGE")], f"JobsTable: key schema must be pk HASH, sk RANGE, got {keys}")
    gsis = {g["IndexName"]: g for g in p.get("GlobalSecondaryIndexes", [])}
    gsi = gsis.get("GSI1")
    check(gsi is not None, "JobsTable: GSI1 missing")
    if gsi:
        gkeys = [(k["AttributeName"], k["KeyType"]) for k in gsi.get("KeySchema", [])]
        check(gkeys == [("gsi1pk", "HASH"), ("gsi1sk", "RANGE")], f"GSI1: keys must be gsi1pk HASH, gsi1sk RANGE, got {gkeys}")
        check(gsi.get("Projection", {}).get("ProjectionType") == "ALL", "GSI1: projection must be ALL")
    ttl = p.get("TimeToLiveSpecification", {})
    check(ttl.get("AttributeName") == "expires_at" and ttl.get("Enabled") is True,
          "JobsTable: TTL must be enabled on expires_at")
    check(p.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True,
          "JobsTable: point-in-time recovery must be on")


def check_queues(res: dict, worker_timeout: int) -> dict[str, str]:
    """Returns queue name -> logical id, for the events check."""
    by_name = {}
    for logical, r in res.items():
        if r.get("Type") == "AWS::SQS::Queue":
            name = sub(r.get("Properties", {}).get("QueueName"))
            check(name is not None, f"{logical}: QueueName must be an !Sub of the stack name")
            if name:
                by_name[name] = logical
    for band in BANDS:
        q_name, dlq_name = f"${{AWS::StackName}}-{band}", f"${{AWS::StackName}}-{band}-dlq"
        q, dlq = by_name.get(q_name), by_name.get(dlq_name)
        check(q is not None, f"queue {q_name} missing")
        check(dlq is not None, f"queue {dlq_name} missing")
        if not (q and dlq):
            continue
        expected_q, expected_dlq = RESOURCE_ENV[f"QUEUE_URL_{band.upper()}"], RESOURCE_ENV[f"DLQ_URL_{band.upper()}"]
        check(q == expected_q, f"queue {q_name} must be the resource {expected_q}, is {q}")
        check(dlq == expected_dlq, f"queue {dlq_name} must be the resource {expected_dlq}, is {dlq}")
        p = res[q]["Properties"]
        redrive = p.get("RedrivePolicy", {})
        check(redrive.get("deadLetterTargetArn") == {"Fn::GetAtt": [dlq, "Arn"]},
              f"{q}: RedrivePolicy must target {dlq}")
        check(isinstance(redrive.get("maxReceiveCount"), int) and 3 <= redrive["maxReceiveCount"] <= 5,
              f"{q}: maxReceiveCount must be 3-5, is {redrive.get('maxReceiveCount')}")
        vis = p.get("VisibilityTimeout")
        check(isinstance(vis, int) and vis >= 6 * worker_timeout,
              f"{q}: VisibilityTimeout {vis} must be at least 6 x the worker timeout ({worker_timeout} s)")
        check("RedrivePolicy" not in res[dlq].get("Properties", {}), f"{dlq}: a DLQ must not redrive")
    return {name.replace("${AWS::StackName}", "vacal"): logical for name, logical in by_name.items()}


def effective(template: dict, logical: str, prop: str):
    fn = template["Resources"][logical].get("Properties", {})
    if prop in fn:
        return fn[prop]
    return template.get("Globals", {}).get("Function", {}).get(prop)


def check_functions(template: dict, params: dict, config_names: list[str]) -> int:
    res = template["Resources"]
    global_env = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    allowed = set(RESOURCE_ENV) | set(config_names)
    for logical, binary in FUNCTIONS.items():
        f = res.get(logical)
        check(f is not None and f.get("Type") == "AWS::Serverless::Function", f"{logical} missing")
        if not f:
            continue
        meta = f.get("Metadata", {})
        check(meta.get("BuildMethod") == "rust-cargolambda", f"{logical}: Metadata.BuildMethod must be rust-cargolambda")
        check(meta.get("BuildProperties", {}).get("Binary") == binary,
              f"{logical}: Metadata.BuildProperties.Binary must be {binary}")
        check(effective(template, logical, "Runtime") == "provided.al2023", f"{logical}: Runtime must be provided.al2023")
        check(effective(template, logical, "Architectures") == ["arm64"], f"{logical}: Architectures must be [arm64]")
        check(effective(template, logical, "Handler") == "bootstrap", f"{logical}: Handler must be bootstrap")
        logging = {**(template.get("Globals", {}).get("Function", {}).get("LoggingConfig") or {}),
                   **(f["Properties"].get("LoggingConfig") or {})}
        check(logging.get("LogFormat") == "JSON", f"{logical}: LoggingConfig.LogFormat must be JSON")
        env = {**global_env, **f["Properties"].get("Environment", {}).get("Variables", {})}
        for name, target in RESOURCE_ENV.items():
            check(env.get(name) == {"Ref": target}, f"{logical}: {name} must be !Ref {target}, is {env.get(name)}")
        for name in config_names:
            check(name in env, f"{logical}: config variable {name} (read by config.rs) is not set")
        for name in env:
            check(name in allowed, f"{logical}: environment variable {name} is neither a resource nor read by config.rs")

    # The worker: one SQS event source per band with partial batch failures.
    worker_timeout = resolve(effective(template, "WorkerFunction", "Timeout"), params)
    events = res.get("WorkerFunction", {}).get("Properties", {}).get("Events", {})
    concurrency = {}
    for band in BANDS:
        queue = RESOURCE_ENV[f"QUEUE_URL_{band.upper()}"]
        matching = [e for e in events.values()
                    if e.get("Type") == "SQS" and e.get("Properties", {}).get("Queue") == {"Fn::GetAtt": [queue, "Arn"]}]
        check(len(matching) == 1, f"WorkerFunction: needs exactly one SQS event on {queue}")
        if not matching:
            continue
        p = matching[0]["Properties"]
        check(p.get("FunctionResponseTypes") == ["ReportBatchItemFailures"],
              f"WorkerFunction {band}: FunctionResponseTypes must be [ReportBatchItemFailures]")
        batch = p.get("BatchSize")
        batch_max = params.get(batch["Ref"], {}).get("MaxValue") if isinstance(batch, dict) else batch
        check(isinstance(batch_max, int) and 1 <= batch_max <= 5, f"WorkerFunction {band}: BatchSize must be at most 5")
        concurrency[band] = resolve(p.get("ScalingConfig", {}).get("MaximumConcurrency"), params)
        check(isinstance(concurrency[band], int) and concurrency[band] >= 2,
              f"WorkerFunction {band}: ScalingConfig.MaximumConcurrency must be set (>= 2)")
    if len(concurrency) == 3 and all(isinstance(v, int) for v in concurrency.values()):
        check(concurrency["high"] > concurrency["normal"] > concurrency["low"],
              f"WorkerFunction: MaximumConcurrency must be higher for higher bands, is {concurrency}")

    # The janitor: every minute.
    jevents = res.get("JanitorFunction", {}).get("Properties", {}).get("Events", {})
    check(any(e.get("Type") in ("Schedule", "ScheduleV2") and e.get("Properties", {}).get("Schedule") == "rate(1 minute)"
              for e in jevents.values()), "JanitorFunction: needs a rate(1 minute) schedule")

    # The API: the routes the events use.
    aevents = res.get("ApiFunction", {}).get("Properties", {}).get("Events", {})
    keys = set()
    for e in aevents.values():
        if e.get("Type") != "HttpApi":
            continue
        p = e.get("Properties", {})
        if "Path" not in p and "Method" not in p:
            keys.add("$default")
        else:
            keys.add(f"{p.get('Method', 'ANY').upper()} {p.get('Path')}")
        check(str(p.get("PayloadFormatVersion", "2.0")) == "2.0", "ApiFunction: HttpApi events must use payload 2.0")
    check(keys == API_ROUTE_KEYS, f"ApiFunction: HttpApi routes must be {sorted(API_ROUTE_KEYS)}, are {sorted(keys)}")
    check(isinstance(worker_timeout, int), "WorkerFunction: Timeout must be a number")
    return worker_timeout if isinstance(worker_timeout, int) else 10**9


def check_bucket(res: dict) -> None:
    b = res.get("ResultsBucket", {})
    check(b.get("Type") == "AWS::S3::Bucket", "ResultsBucket missing")
    p = b.get("Properties", {})
    check(sub(p.get("BucketName")) == "${AWS::StackName}-results-${AWS::AccountId}",
          "ResultsBucket: BucketName must be ${AWS::StackName}-results-${AWS::AccountId}")
    pab = p.get("PublicAccessBlockConfiguration", {})
    check(all(pab.get(k) is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")),
          "ResultsBucket: every PublicAccessBlock setting must be true")
    check(bool(p.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration")), "ResultsBucket: encryption missing")
    check(any(r.get("ObjectOwnership") == "BucketOwnerEnforced" for r in p.get("OwnershipControls", {}).get("Rules", [])),
          "ResultsBucket: ObjectOwnership must be BucketOwnerEnforced")
    rules = p.get("LifecycleConfiguration", {}).get("Rules", [])
    check(any(r.get("Status") == "Enabled" and (r.get("Prefix") == "results/" or r.get("Filter", {}).get("Prefix") == "results/")
              and "ExpirationInDays" in r for r in rules), "ResultsBucket: lifecycle must expire results/")
    policies = [r for r in res.values() if r.get("Type") == "AWS::S3::BucketPolicy"
                and r.get("Properties", {}).get("Bucket") == {"Ref": "ResultsBucket"}]
    denies_http = any(s.get("Effect") == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
                      for pol in policies for s in pol["Properties"]["PolicyDocument"].get("Statement", []))
    check(denies_http, "ResultsBucket: a bucket policy must deny requests without TLS")


def check_alarms(res: dict) -> None:
    for band in BANDS:
        dlq = RESOURCE_ENV[f"DLQ_URL_{band.upper()}"]
        alarms = [r["Properties"] for r in res.values() if r.get("Type") == "AWS::CloudWatch::Alarm"
                  and {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq, "QueueName"]}} in r.get("Properties", {}).get("Dimensions", [])]
        check(any(a.get("MetricName") == "ApproximateNumberOfMessagesVisible" and a.get("Threshold") == 0
                  and a.get("ComparisonOperator") == "GreaterThanThreshold" for a in alarms),
              f"{dlq}: needs an alarm on ApproximateNumberOfMessagesVisible > 0")


def check_outputs(template: dict) -> None:
    outputs = template.get("Outputs", {})
    for name in ("ApiUrl", "JobsTableName", "ResultsBucketName", "HighQueueUrl", "NormalQueueUrl", "LowQueueUrl"):
        check(name in outputs, f"Outputs: {name} missing")


def check_events(queues: dict[str, str], routes) -> None:
    files = sorted(glob.glob(os.path.join(ROOT, "events", "*.json")))
    check(len(files) > 0, "events/: no events")
    covered = set()
    for path in files:
        name = os.path.basename(path)
        try:
            with open(path, encoding="utf-8") as f:
                ev = json.load(f)
        except ValueError as e:
            check(False, f"events/{name}: not JSON ({e})")
            continue
        if name.startswith("api-"):
            check(ev.get("version") == "2.0", f"events/{name}: version must be 2.0")
            key = ev.get("routeKey")
            check(key in API_ROUTE_KEYS, f"events/{name}: routeKey {key} is not a route of the template")
            ctx = ev.get("requestContext", {})
            check(ctx.get("routeKey") == key, f"events/{name}: requestContext.routeKey differs from routeKey")
            check(ctx.get("stage") == "$default", f"events/{name}: stage must be $default")
            method, raw = ctx.get("http", {}).get("method"), ev.get("rawPath", "")
            check(ctx.get("http", {}).get("path") == raw, f"events/{name}: requestContext.http.path differs from rawPath")
            if key == "ANY /api/v1/{proxy+}":
                check(raw.startswith("/api/v1/") and ev.get("pathParameters", {}).get("proxy") == raw[len("/api/v1/"):],
                      f"events/{name}: pathParameters.proxy must be the path after /api/v1/")
            elif key == "ANY /":
                check(raw == "/", f"events/{name}: route ANY / takes only /")
            matched = [r for m, r, rx in routes if m == method and rx.match(raw)]
            if key == "$default":
                check(not raw.startswith("/api/v1/") and raw != "/",
                      f"events/{name}: {raw} would match a more specific route than $default")
            else:
                check(len(matched) == 1, f"events/{name}: {method} {raw} matches no route of the router")
            covered.update((method, r) for r in matched)
            if "body" in ev:
                body = ev["body"]
                if ev.get("isBase64Encoded"):
                    try:
                        body = base64.b64decode(body, validate=True).decode("utf-8")
                    except ValueError as e:
                        check(False, f"events/{name}: body is not valid base64 ({e})")
                        continue
                check(ev.get("headers", {}).get("content-length") == str(len(body.encode())),
                      f"events/{name}: content-length header does not match the body")
                content_type = ev.get("headers", {}).get("content-type", "")
                if content_type.startswith("multipart/form-data"):
                    boundary = content_type.partition("boundary=")[2]
                    check(bool(boundary) and body.rstrip().endswith(f"--{boundary}--"),
                          f"events/{name}: multipart body does not end with its boundary")
                elif "invalid" not in name:
                    try:
                        json.loads(body)
                    except ValueError:
                        check(False, f"events/{name}: body is not JSON (name the file *invalid* if that is the point)")
        elif name.startswith("sqs-"):
            records = ev.get("Records", [])
            check(len(records) > 0, f"events/{name}: no Records")
            for r in records:
                check(r.get("eventSource") == "aws:sqs", f"events/{name}: eventSource must be aws:sqs")
                queue = r.get("eventSourceARN", "").rsplit(":", 1)[-1]
                check(queue in queues and not queue.endswith("-dlq"),
                      f"events/{name}: {queue} is not a band queue of a stack named vacal")
        elif name.startswith("schedule-"):
            check(ev.get("detail-type") == "Scheduled Event" and ev.get("source") == "aws.events",
                  f"events/{name}: must be an EventBridge Scheduled Event")
        else:
            check(False, f"events/{name}: name must start with api-, sqs- or schedule-")
    for method, route, _ in routes:
        check((method, route) in covered, f"events/: no API event for {method} {route}")
    names = {os.path.basename(p) for p in files}
    for required in ("sqs-single.json", "sqs-batch-with-malformed.json"):
        check(required in names, f"events/{required} missing")


def main() -> int:
    template = load_template()
    check(template.get("Transform") == "AWS::Serverless-2016-10-31", "Transform must be AWS::Serverless-2016-10-31")
    res = template.get("Resources", {})
    params = template.get("Parameters", {})
    check_table(res)
    worker_timeout = check_functions(template, params, config_variables())
    queues = check_queues(res, worker_timeout)
    check_bucket(res)
    check_alarms(res)
    check_outputs(template)
    check_events(queues, router_routes())
    if failures:
        for f in failures:
            print(f"FAIL {f}", file=sys.stderr)
        print(f"check_template: {len(failures)} problem(s)", file=sys.stderr)
        return 1
    print("check_template: template.yaml and events/ match the contract")
    return 0


if __name__ == "__main__":
    sys.exit(main())
