// Passkey ceremonies on Tessera's pages: the browser signs (or creates a key for) the challenge the
// server put in the page, and the form carries the answer back. Everything else works without scripts.
(function () {
  'use strict';
  var lib = window.SimpleWebAuthnBrowser;

  function say(form, message) {
    var slot = form.querySelector('[data-passkey-message]');
    if (!slot) return;
    slot.textContent = message;
    slot.hidden = false;
  }

  function unsupported(form) {
    if (lib && lib.browserSupportsWebAuthn()) return false;
    say(form, 'This browser cannot use passkeys. Use another browser, or choose another method.');
    return true;
  }

  // The user closed the browser's dialog, or no key of theirs answered: they may try again.
  function refused(form, error) {
    var name = error && error.name;
    if (name === 'NotAllowedError' || name === 'AbortError') say(form, 'No passkey was used. Try again, or choose another method.');
    else if (name === 'InvalidStateError') say(form, 'This passkey is already registered to your account.');
    else if (name === 'TesseraError') say(form, error.message);
    else say(form, 'Your browser could not use a passkey: ' + ((error && error.message) || 'unknown error') + '.');
  }

  // Sends the browser's answer with the form; a refusal leaves the form as it was, to try again.
  function answerWith(form, ceremony, release) {
    return ceremony.then(function (answer) {
      form.querySelector('input[name=response]').value = JSON.stringify(answer);
      form.submit();
    }).catch(function (error) {
      release();
      refused(form, error);
    });
  }

  // Where the options come from: the page itself (signing in, or adding one at sign-in), or Tessera on
  // request (/account, where a second factor may have to be passed first: then the plain form asks for it).
  function optionsOf(form) {
    var inline = form.getAttribute('data-options');
    if (inline) return Promise.resolve(JSON.parse(inline));
    var body = new URLSearchParams({ csrf: form.querySelector('input[name=csrf]').value });
    return fetch(form.getAttribute('data-options-url'), { method: 'POST', body: body, credentials: 'same-origin', headers: { Accept: 'application/json' } })
      .then(function (response) {
        if (response.ok && /json/.test(response.headers.get('content-type') || '')) return response.json();
        if (response.status !== 403) {
          var failure = new Error('Tessera could not start adding a passkey just now (' + response.status + '). Try again in a moment.');
          failure.name = 'TesseraError';
          throw failure;
        }
        // A second factor must be passed first: the plain form asks for it, then comes back here.
        var flag = document.createElement('input');
        flag.type = 'hidden';
        flag.name = 'script';
        flag.value = '1';
        form.appendChild(flag);
        form.submit();
        return null;
      });
  }

  function onSubmit(selector, run) {
    document.querySelectorAll(selector).forEach(function (form) {
      var busy = false;
      form.addEventListener('submit', function (event) {
        event.preventDefault();
        if (busy || unsupported(form)) return;
        busy = true;
        run(form, function () { busy = false; });
      });
    });
  }

  onSubmit('form[data-passkey-sign-in]', function (form, release) {
    answerWith(form, lib.startAuthentication({ optionsJSON: JSON.parse(form.getAttribute('data-options')) }), release);
  });

  onSubmit('form[data-passkey-register]', function (form, release) {
    optionsOf(form).then(function (options) {
      if (options) answerWith(form, lib.startRegistration({ optionsJSON: options }), release);
    }, function (error) {
      release();
      refused(form, error);
    });
  });
})();
