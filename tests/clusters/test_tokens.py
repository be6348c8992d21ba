from __future__ import annotations

import base64
import logging

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from clusters import tokens
from clusters.models import Cluster

KEY = b"k" * 32


@pytest.fixture(autouse=True)
def _fresh_cache():
    tokens.forget()
    yield
    tokens.forget()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "jwt_hs256.key"
    path.write_bytes(KEY)
    return path


def cluster(**fields) -> Cluster:
    defaults = {"pk": 1, "slug": "c1", "jwt_key_source": "file", "jwt_key_ref": "/nonexistent"}
    return Cluster(**(defaults | fields))


def test_it_mints_a_short_lived_token_slurm_accepts(key_file):
    c = cluster(jwt_key_ref=str(key_file), token_lifetime=300)
    token = tokens.mint(c, "alice")
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sun"] == "alice"
    assert claims["exp"] - claims["iat"] == 300
    assert "uid" not in claims


def test_it_refuses_root_and_the_slurm_user(key_file):
    c = cluster(jwt_key_ref=str(key_file), slurm_user="slurm")
    for name in ("root", "slurm"):
        with pytest.raises(tokens.TokenRefused, match=name):
            tokens.mint(c, name)


def test_it_refuses_uid_zero_under_another_name(key_file):
    c = cluster(jwt_key_ref=str(key_file), jwt_include_ids=True)
    with pytest.raises(tokens.TokenRefused):
        tokens.mint(c, "toor", uid=0, gid=0)


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "-x", "a b", "a;id", "x" * 33, "a\x00"])
def test_it_refuses_names_that_are_not_posix(key_file, name):
    with pytest.raises(tokens.TokenRefused):
        tokens.mint(cluster(jwt_key_ref=str(key_file)), name)


def test_it_reuses_a_token_until_half_its_life_is_gone(key_file, monkeypatch):
    c = cluster(jwt_key_ref=str(key_file), token_lifetime=300)
    clock = [1_000_000.0]
    monkeypatch.setattr(tokens.time, "time", lambda: clock[0])
    first = tokens.mint(c, "alice")
    clock[0] += 100
    assert tokens.mint(c, "alice") == first
    assert tokens.mint(c, "bob") != first
    clock[0] += 60  # 160 s of 300 gone: less than half left
    again = tokens.mint(c, "alice")
    assert again != first
    assert jwt.decode(again, KEY, algorithms=["HS256"], options={"verify_exp": False})["iat"] == 1_000_160


def test_it_adds_identity_claims_for_aws_pcs(key_file):
    c = cluster(jwt_key_ref=str(key_file), jwt_include_ids=True)
    claims = jwt.decode(tokens.mint(c, "alice", uid=2001, gid=2001), KEY, algorithms=["HS256"])
    assert (claims["uid"], claims["gid"], claims["id"]["name"]) == (2001, 2001, "alice")


def test_it_signs_rs256_with_a_key_id(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "jwks.pem"
    path.write_bytes(pem)
    c = cluster(jwt_key_ref=str(path), jwt_algorithm="RS256", jwt_key_id="console-1")
    token = tokens.mint(c, "alice")
    assert jwt.get_unverified_header(token)["kid"] == "console-1"
    assert jwt.decode(token, private.public_key(), algorithms=["RS256"])["sun"] == "alice"


def test_a_missing_key_file_is_a_clear_error():
    with pytest.raises(tokens.KeyUnavailable, match=r"/nonexistent.*c1"):
        tokens.mint(cluster(), "alice")


def test_it_reads_a_base64_key_from_the_environment(monkeypatch):
    monkeypatch.setenv("C1_JWT_KEY", base64.b64encode(KEY).decode())
    token = tokens.mint(cluster(jwt_key_source="env", jwt_key_ref="C1_JWT_KEY"), "alice")
    assert jwt.decode(token, KEY, algorithms=["HS256"])["sun"] == "alice"


def test_a_malformed_environment_key_names_the_variable(monkeypatch):
    monkeypatch.setenv("C1_JWT_KEY", "not base64 at all!")
    with pytest.raises(tokens.KeyUnavailable, match="C1_JWT_KEY"):
        tokens.mint(cluster(jwt_key_source="env", jwt_key_ref="C1_JWT_KEY"), "alice")


@mock_aws
def test_it_reads_the_key_from_secrets_manager():
    sm = boto3.client("secretsmanager", region_name="eu-west-1")
    sm.create_secret(Name="slurm/jwt", SecretBinary=KEY)
    c = cluster(jwt_key_source="aws_secret", jwt_key_ref="slurm/jwt", aws_region="eu-west-1")
    assert jwt.decode(tokens.mint(c, "alice"), KEY, algorithms=["HS256"])["sun"] == "alice"


@mock_aws
def test_a_missing_secret_is_a_clear_error():
    c = cluster(jwt_key_source="aws_secret", jwt_key_ref="slurm/none", aws_region="eu-west-1")
    with pytest.raises(tokens.KeyUnavailable, match="ResourceNotFoundException"):
        tokens.mint(c, "alice")


def test_neither_token_nor_key_reaches_a_log(key_file, caplog):
    caplog.set_level(logging.DEBUG)
    token = tokens.mint(cluster(jwt_key_ref=str(key_file)), "alice")
    assert token not in caplog.text
    assert KEY.decode() not in caplog.text
