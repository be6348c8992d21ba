"""IAM policies as a CloudFormation template makes them, and a small evaluator of AWS's documented logic.

The evaluator follows the IAM User Guide's "Policy evaluation logic" for one account: an explicit Deny
anywhere wins; otherwise an Allow in an identity policy, or in the resource's policy for a principal it
names, allows; otherwise the request is implicitly denied. Two resource policies are stricter, as AWS
documents them: a KMS key policy must allow the request itself (a statement for the account's root only
delegates to IAM policies, which must then allow it too), and so must a role's trust policy.

Only what deploy/aws/clusterra.yaml uses is implemented (Action/NotAction, Resource/NotResource, Principal,
the String*, Arn*, Null and Bool operators with IfExists and ForAllValues/ForAnyValue, and the policy
variables), and anything else raises, so a policy the evaluator cannot read fails the test instead of
passing it. AWS managed policies (AmazonSSMManagedInstanceCore) are not in the template and are left out.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ALLOWED = "allowed"
EXPLICIT_DENY = "explicit deny"
IMPLICIT_DENY = "implicit deny"

# --- the template: YAML with CloudFormation's short tags, and its intrinsic functions ---------------------


class _TemplateLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> dict:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _tag)


def load_template(path: str | Path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=_TemplateLoader)  # noqa: S506 - SafeLoader subclass


_NO_VALUE = object()


class Stack:
    """The template's resources, parameters, pseudo parameters and intrinsics resolved like CloudFormation.

    Physical names and ids are made up the way CloudFormation makes them (stack-Logical-SUFFIX), stable
    for a given stack name, so tests can write the ARNs they expect.
    """

    def __init__(
        self,
        template: dict,
        parameters: dict[str, str],
        *,
        account: str = "111122223333",
        region: str = "eu-west-1",
        stack_name: str = "clusterra",
        partition: str = "aws",
    ) -> None:
        self.template = template
        self.account, self.region, self.stack_name, self.partition = account, region, stack_name, partition
        self.parameters: dict[str, str] = {}
        for name, spec in template.get("Parameters", {}).items():
            if name in parameters:
                self.parameters[name] = str(parameters[name])
            elif "Default" in spec:
                self.parameters[name] = str(spec["Default"])
            else:
                raise KeyError(f"parameter {name} has no default; give it")
            allowed = spec.get("AllowedValues")
            if allowed and self.parameters[name] not in [str(v) for v in allowed]:
                raise ValueError(f"parameter {name}={self.parameters[name]!r} is not one of {allowed}")
            pattern = spec.get("AllowedPattern")
            if pattern and not re.fullmatch(pattern, self.parameters[name]):
                raise ValueError(f"parameter {name}={self.parameters[name]!r} does not match {pattern}")
        unknown = set(parameters) - set(self.parameters)
        if unknown:
            raise KeyError(f"not parameters of the template: {sorted(unknown)}")
        self.resources = template["Resources"]
        self._conditions: dict[str, bool] = {}

    # names and ids

    def _suffix(self, logical: str, size: int = 12) -> str:
        digest = hashlib.sha256(f"{self.stack_name}/{logical}".encode()).hexdigest().upper()
        return "".join(c if c.isalpha() else chr(ord("A") + int(c)) for c in digest[:size])

    def physical_name(self, logical: str) -> str:
        return f"{self.stack_name}-{logical}-{self._suffix(logical)}"

    def role_id(self, logical: str) -> str:
        return f"AROA{self._suffix(logical, 17)}"

    def ref(self, name: str) -> Any:
        pseudo = {
            "AWS::AccountId": self.account,
            "AWS::Region": self.region,
            "AWS::StackName": self.stack_name,
            "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": _NO_VALUE,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        kind = self.resources[name]["Type"]
        props = self.resources[name].get("Properties", {})
        if kind == "AWS::IAM::ManagedPolicy":
            return f"arn:{self.partition}:iam::{self.account}:policy/{self.physical_name(name)}"
        if kind == "AWS::SecretsManager::Secret":
            return (
                f"arn:{self.partition}:secretsmanager:{self.region}:{self.account}:secret:"
                f"{name}-{self._suffix(name)}-{self._suffix(name + '/v', 6)}"
            )
        if kind == "AWS::KMS::Key":
            hexed = hashlib.sha256(f"{self.stack_name}/{name}".encode()).hexdigest()
            return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:32]}"
        if kind in ("AWS::Logs::LogGroup",) and "LogGroupName" in props:
            return self.resolve(props["LogGroupName"])
        if kind == "AWS::SSM::Document" and "Name" in props:
            return self.resolve(props["Name"])
        return self.physical_name(name)

    def get_att(self, name: str, attribute: str) -> str:
        kind = self.resources[name]["Type"]
        path = self.resolve(self.resources[name].get("Properties", {}).get("Path", "/"))
        if kind == "AWS::IAM::Role" and attribute == "Arn":
            return f"arn:{self.partition}:iam::{self.account}:role{path}{self.ref(name)}"
        if kind == "AWS::IAM::Role" and attribute == "RoleId":
            return self.role_id(name)
        if kind == "AWS::IAM::InstanceProfile" and attribute == "Arn":
            return f"arn:{self.partition}:iam::{self.account}:instance-profile{path}{self.ref(name)}"
        if kind == "AWS::KMS::Key" and attribute == "Arn":
            return f"arn:{self.partition}:kms:{self.region}:{self.account}:key/{self.ref(name)}"
        if kind == "AWS::Logs::LogGroup" and attribute == "Arn":
            return f"arn:{self.partition}:logs:{self.region}:{self.account}:log-group:{self.ref(name)}:*"
        raise NotImplementedError(f"Fn::GetAtt {name}.{attribute} ({kind})")

    # intrinsic functions

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.resolve(self.template["Conditions"][name]))
        return self._conditions[name]

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            items = [self.resolve(v) for v in value]
            return [v for v in items if v is not _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition" and isinstance(arg, str):
                return self.condition(arg)
            if key.startswith("Fn::"):
                return self._function(key[4:], arg)
        resolved = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not _NO_VALUE}

    def _function(self, name: str, arg: Any) -> Any:
        if name == "Sub":
            text, names = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))
            return self._sub(text, names)
        if name == "GetAtt":
            logical, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self.get_att(logical, attribute)
        if name == "Join":
            separator, items = arg
            return separator.join(str(v) for v in self.resolve(items))
        if name == "Select":
            index, items = self.resolve(arg)
            return items[int(index)]
        if name == "Split":
            separator, text = self.resolve(arg)
            return text.split(separator)
        if name == "If":
            condition, then, otherwise = arg
            return self.resolve(then if self.condition(condition) else otherwise)
        if name == "Equals":
            left, right = self.resolve(arg)
            return str(left) == str(right)
        if name == "Not":
            return not self.resolve(arg[0])
        if name == "And":
            return all(self.resolve(a) for a in arg)
        if name == "Or":
            return any(self.resolve(a) for a in arg)
        raise NotImplementedError(f"Fn::{name}")

    def _sub(self, text: str, names: dict[str, Any]) -> str:
        def one(match: re.Match) -> str:
            inner = match.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"  # a literal ${...}: an IAM policy variable
            if inner in names:
                return str(names[inner])
            if "." in inner and inner.split(".", 1)[0] in self.resources:
                return self.get_att(*inner.split(".", 1))
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    # what the tests ask for

    def properties(self, logical: str) -> dict:
        resource = self.resources[logical]
        if "Condition" in resource and not self.condition(resource["Condition"]):
            raise LookupError(f"{logical} is not created with these parameters")
        return self.resolve(resource.get("Properties", {}))

    def trust_policy(self, role: str) -> dict:
        return _document(self.properties(role)["AssumeRolePolicyDocument"])

    def key_policy(self, key: str) -> dict:
        return _document(self.properties(key)["KeyPolicy"])

    def identity_policies(self, role: str) -> list[dict]:
        """Its inline policies, the RolePolicy/Policy resources naming it, and the template's managed ones."""
        props = self.properties(role)
        name = self.ref(role)
        found = [_document(p["PolicyDocument"]) for p in props.get("Policies", [])]
        for logical, resource in self.resources.items():
            if resource["Type"] not in ("AWS::IAM::RolePolicy", "AWS::IAM::Policy"):
                continue
            attached = self.properties(logical)
            if attached.get("RoleName") == name or name in attached.get("Roles", []):
                found.append(_document(attached["PolicyDocument"]))
        managed = {
            self.ref(k): k for k, r in self.resources.items() if r["Type"] == "AWS::IAM::ManagedPolicy"
        }
        for arn in props.get("ManagedPolicyArns", []):
            if arn in managed:
                found.append(_document(self.properties(managed[arn])["PolicyDocument"]))
        return found

    def session_of(self, role: str, session_name: str, **context: Any) -> Principal:
        """The principal a role session is: the role's policies and the request context its calls carry."""
        role_arn = self.get_att(role, "Arn")
        keys = {
            "aws:PrincipalArn": role_arn,
            "aws:PrincipalAccount": self.account,
            "aws:userid": f"{self.role_id(role)}:{session_name}",
            "aws:PrincipalType": "AssumedRole",
        }
        keys.update(context)
        return Principal(
            arn=f"arn:{self.partition}:sts::{self.account}:assumed-role/{self.ref(role)}/{session_name}",
            account=self.account,
            role_arn=role_arn,
            policies=self.identity_policies(role),
            context=keys,
        )


def _document(value: Any) -> dict:
    """A policy document; CloudFormation takes one as an object or as a JSON string."""
    return json.loads(value) if isinstance(value, str) else value


# --- the evaluator -----------------------------------------------------------------------------------------


@dataclass
class Principal:
    """Who asks: an assumed-role session, a service, or a web identity, with its identity policies."""

    arn: str
    account: str
    role_arn: str | None = None
    service: str | None = None
    federated: str | None = None
    policies: list[dict] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def decide(
    principal: Principal,
    action: str,
    resource: str,
    *,
    context: dict[str, Any] | None = None,
    resource_policy: dict | None = None,
    resource_kind: str = "generic",
) -> str:
    """ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY for one action on one resource.

    resource_kind "kms" (a key policy) and "trust" (a role's trust policy) must allow the request
    themselves; a statement naming only the account delegates to the principal's identity policies.
    """
    keys = _lower_keys({**principal.context, **(context or {})})
    identity = [_effect(s, action, resource, keys) for p in principal.policies for s in _statements(p)]
    granted: list[str] = []
    if resource_policy is not None:
        for statement in _statements(resource_policy):
            effect = _effect(statement, action, resource, keys)
            if effect is None:
                continue
            how = _names_principal(statement, principal)
            if how:
                granted.append(effect if effect == "Deny" else how)
    if "Deny" in identity or "Deny" in granted:
        return EXPLICIT_DENY
    identity_allows = "Allow" in identity
    if resource_policy is None:
        return ALLOWED if identity_allows else IMPLICIT_DENY
    direct, delegated = "direct" in granted, "account" in granted
    if resource_kind in ("kms", "trust"):
        allowed = direct or (delegated and identity_allows)
    else:
        allowed = identity_allows or direct or delegated
    return ALLOWED if allowed else IMPLICIT_DENY


def _statements(policy: dict) -> list[dict]:
    body = policy.get("Statement", [])
    return [body] if isinstance(body, dict) else list(body)


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _effect(statement: dict, action: str, resource: str, keys: dict[str, Any]) -> str | None:
    """The statement's Effect when it applies to this request, else None."""
    known = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition"}
    known |= {"Principal", "NotPrincipal"}
    if set(statement) - known:
        raise NotImplementedError(f"statement element(s) {sorted(set(statement) - known)}")
    if "Action" in statement:
        if not any(_glob(p, action, ignore_case=True) for p in _listed(statement["Action"])):
            return None
    elif any(_glob(p, action, ignore_case=True) for p in _listed(statement["NotAction"])):
        return None
    # A trust policy has no Resource: the role itself is the resource.
    if "Resource" in statement:
        if not any(_resource_matches(p, resource, keys) for p in _listed(statement["Resource"])):
            return None
    elif "NotResource" in statement and any(
        _resource_matches(p, resource, keys) for p in _listed(statement["NotResource"])
    ):
        return None
    if not _conditions_hold(statement.get("Condition", {}), keys):
        return None
    if statement["Effect"] not in ("Allow", "Deny"):
        raise ValueError(f"Effect {statement['Effect']!r}")
    return statement["Effect"]


def _names_principal(statement: dict, principal: Principal) -> str | None:
    """'direct' when the statement names this principal, 'account' when it names only its account."""
    if "NotPrincipal" in statement:
        raise NotImplementedError("NotPrincipal")
    named = statement.get("Principal")
    if named == "*":
        return "direct"
    for kind, values in (named or {}).items():
        for value in _listed(values):
            if kind == "AWS":
                if value == "*" or value in (principal.arn, principal.role_arn):
                    return "direct"
                if (
                    value in (principal.account, f"arn:aws:iam::{principal.account}:root")
                    and principal.role_arn
                ):
                    return "account"
            elif (kind, value) in (("Service", principal.service), ("Federated", principal.federated)):
                return "direct"
            elif kind not in ("AWS", "Service", "Federated"):
                raise NotImplementedError(f"Principal {kind}")
    return None


# Policy variables: ${key}, with the escapes ${*}, ${?} and ${$}.
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


class _Missing(Exception):
    """A policy variable names a key the request does not carry: the element does not match."""


def _substitute(text: str, keys: dict[str, Any]) -> str:
    def one(match: re.Match) -> str:
        name = match.group(1)
        if name in ("*", "?", "$"):
            return "\x00" + name  # a literal character, not a wildcard
        value = keys.get(name.lower())
        if value is None or isinstance(value, list):
            raise _Missing(name)
        return str(value)

    return _VARIABLE.sub(one, text)


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\x00":  # an escaped variable: the next character is literal
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if c == "*" else "." if c == "?" else re.escape(c)
        i += 1
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnLike and Resource: each of the six colon-separated parts matched on its own."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split(":", 5), arn.split(":", 5)
    return len(wanted) == len(actual) == 6 and all(_glob(w, a) for w, a in zip(wanted, actual, strict=True))


def _resource_matches(pattern: str, resource: str, keys: dict[str, Any]) -> bool:
    try:
        return _arn_like(_substitute(pattern, keys), resource)
    except _Missing:
        return False


def _lower_keys(keys: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in keys.items()}


_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}


def _compare(operator: str, policy_value: str, request_value: str) -> bool:
    if operator in ("StringEquals", "StringNotEquals"):
        return policy_value == request_value
    if operator in ("StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase"):
        return policy_value.lower() == request_value.lower()
    if operator in ("StringLike", "StringNotLike"):
        return _glob(policy_value, request_value)
    if operator in ("ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike"):
        return _arn_like(policy_value, request_value)
    if operator == "Bool":
        return policy_value.lower() == str(request_value).lower()
    raise NotImplementedError(f"condition operator {operator}")


def _conditions_hold(block: dict, keys: dict[str, Any]) -> bool:
    """Every operator and every key of the block must hold (AND); any of a key's values may match (OR)."""
    for full_operator, tests in block.items():
        qualifier, _, operator = full_operator.rpartition(":")
        if_exists = operator.endswith("IfExists")
        operator = operator.removesuffix("IfExists")
        for key, wanted in tests.items():
            present = key.lower() in keys
            if operator == "Null":
                if str(wanted).lower() != ("false" if present else "true"):
                    return False
                continue
            negated = operator in _NEGATED
            try:
                values = [_substitute(str(v), keys) for v in _listed(wanted)]
            except _Missing:
                return False
            if not present:
                if qualifier == "ForAllValues":
                    continue  # nothing in the request fails "for all values"
                if if_exists or (negated and not qualifier):
                    continue
                return False
            request = keys[key.lower()]
            requested = [str(v) for v in _listed(request)]
            if qualifier and negated:
                raise NotImplementedError(f"{full_operator} (a negated set operator)")
            if qualifier == "ForAllValues":
                ok = all(any(_compare(operator, w, r) for w in values) for r in requested)
            elif qualifier == "ForAnyValue":
                ok = any(any(_compare(operator, w, r) for w in values) for r in requested)
            elif qualifier:
                raise NotImplementedError(f"set operator {qualifier}")
            else:
                if isinstance(request, list):
                    raise ValueError(f"{key} has several values: use ForAllValues or ForAnyValue")
                matched = any(_compare(operator, w, str(request)) for w in values)
                ok = not matched if negated else matched
            if not ok:
                return False
    return True
