"""The self-service demo: sign up at /demo/ with an e-mail link or an IdP account, expire after some days.

Decisions worth knowing:

- **No passwords.** The e-mail link is the credential. A demo person signs in again
  by asking /demo/ for a new link (the same form signs up and signs in), so there
  is no password to set, reset, leak or guess; a browser session lasts
  CLUSTERRA_SESSION_HOURS as for everyone.
- **The form never says who has an account.** Every valid request mails a link;
  what the link does (make an account, sign in, or refuse: deactivated, full,
  address of an IdP account) is decided when it is opened, by the person who
  proved they read that mailbox.
- **An e-mail link never signs in an account it did not make.** An address that
  belongs to an IdP person (or an administrator) gets a page telling them to sign in
  the usual way and press "Join the demo": a mailbox must not bypass the IdP's MFA.
- **Links** are signed (Django's signing, salted), expire after
  CLUSTERRA_DEMO_LINK_MINUTES and are single-use: opening one spends it and every
  other outstanding link for the same address. Opening shows a button first, and
  only the POST acts, because mail scanners fetch links before people do.
- **Throttling** counts mailed links in the database, per client address (an IPv6
  client by its /64) and per recipient, over the last hour, so it holds across any
  number of workers. Behind a proxy, run daphne with --proxy-headers so the
  address is the client's, not the proxy's.
- **Expiry** (`manage.py expire_demo_accounts`): an account the e-mail signup made is
  offboarded like anyone's (accounts.offboarding); an account that existed before
  only leaves the demo group, so an employee who tried the demo keeps their access.
- **Access** is `access`'s: this package only manages membership of the `demo`
  group and sends `joined`/`left`; access.demo gives each person their own demo
  quota, because a group's quota is shared by its members together.
"""
