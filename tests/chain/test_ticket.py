"""The EIP-712 ticket: the Python digest is the contract's ``ticketDigest`` on each backend, a signature binds chain
id and contract, and the chain refuses a ticket signed for another deployment or another chain."""

from __future__ import annotations

import pytest

from protocols.chain.client import JobManagerClient, deploy
from protocols.chain.errors import revert_class
from protocols.chain.models import NodeClass
from protocols.chain.ticket import DOMAIN_NAME, DOMAIN_VERSION, TicketDomain, sign_ticket, ticket_digest, ticket_signer

from .helpers import LEADER_BOND, MIN_STAKE, PARAMS, SETTINGS, Chain, cid_of, ticket_for


def test_python_digest_equals_the_contracts(chain: Chain, manager: JobManagerClient) -> None:
    domain = manager.eip712_domain()
    assert (domain.name, domain.version, domain.chain_id, domain.verifying_contract) == (
        DOMAIN_NAME, DOMAIN_VERSION, chain.w3.eth.chain_id, manager.address)
    ticket = ticket_for(manager, 7, 3, chain.accounts[4].address, 2, term=5, work_units=3)
    digest = ticket_digest(ticket, manager.ticket_domain())
    assert digest == manager.ticket_digest(ticket)
    signature = sign_ticket(ticket, manager.ticket_domain(), chain.accounts[2])
    assert ticket_signer(ticket, manager.ticket_domain(), signature) == chain.accounts[2].address
    other_chain = TicketDomain(chain_id=1, contract=manager.address)
    assert ticket_digest(ticket, other_chain) != digest
    assert ticket_signer(ticket, other_chain, signature) != chain.accounts[2].address


def test_a_ticket_for_another_chain_or_contract_is_refused(chain: Chain, manager: JobManagerClient) -> None:
    acc = chain.accounts
    customer, leader, trainer = (manager.with_account(acc[i]) for i in (1, 2, 3))
    trainer.register_trainer(NodeClass.M, MIN_STAKE)
    leader.register_trainer(NodeClass.L, MIN_STAKE)
    job_id, _ = customer.create_job(PARAMS)
    leader.stand_for_leader(job_id, LEADER_BOND)
    ticket = ticket_for(manager, job_id, 0, trainer.sender, 0)
    twin = deploy(chain.w3, acc[0], SETTINGS)  # same code, another address
    for domain in (TicketDomain(chain_id=chain.w3.eth.chain_id + 1, contract=manager.address),
                   twin.ticket_domain()):
        with pytest.raises(revert_class("JobManagerBadTicketSignature")) as refused:
            trainer.submit_update(ticket, cid_of(b"u"), 1, sign_ticket(ticket, domain, leader.account))
        assert refused.value.args_decoded["leader"] == leader.sender
    with pytest.raises(revert_class("JobManagerNotTicketHolder")):
        customer.submit_update(ticket, cid_of(b"u"), 1, sign_ticket(ticket, manager.ticket_domain(), leader.account))
    accepted = trainer.submit_update(ticket, cid_of(b"u"), 1, sign_ticket(ticket, manager.ticket_domain(),
                                                                         leader.account))
    assert accepted.event("UpdateSubmitted").args["ticketHash"] == ticket_digest(ticket, manager.ticket_domain())
